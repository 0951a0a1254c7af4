"""EigenScore (INSIDE, Chen et al., ICLR 2024) and Efficient EigenScore (EES, SeND, arXiv 2410.15460).

K sampled answers to one prompt give K sentence embeddings z_1..z_K ∈ R^d (rows of Z). With J_d
the centring over the feature dimension,

    Σ          = Zᵀ·J_d·Z                              (K×K; INSIDE's Z is d×K)
    EigenScore = (1/K)·log det(Σ + α·I_K),   α = 1e-3, natural log

with z_k the hidden state of answer k's last token at the middle layer (`answer_embeddings`): the
differential entropy of the answers in embedding space: answers that agree give a low score,
answers that scatter (confabulation) a high one. This equals LM-Polygraph's EigenScore exactly.
INSIDE's code is not a pure rescale of it: it divides the covariance by (d−1) (torch.cov) and
takes log10, so INSIDE(α) = [EigenScore(α·(d−1)) − ln(d−1)] / ln 10; with the same α the two are
not affine in each other.

Both methods work on the smaller Gram side: for K > d, Sylvester's identity gives
log det(Z_c Z_cᵀ + αI_K) = (K−d)·log α + log det(Z_cᵀ Z_c + αI_d).

EES is the log-det by the kernel polynomial method (Chebyshev–Hutchinson), matrix-free: A = Σ + αI
is only ever multiplied with a block of probe vectors (O(K·d) per product, never formed), its
spectrum bounded by a short Lanczos run and mapped to [−1, 1], log expanded in Chebyshev
polynomials T_m with M coefficients from Chebyshev–Gauss quadrature, and tr(log A) estimated
from N_z Rademacher probes (the unit vectors, which make the trace exact, when N_z ≥ the Gram side).
Where this differs from SeND's code, deliberately: the code's `compute_c_m` integrates log(x)·cos(m·x)
where T_m(x) = cos(m·arccos x) belongs, pairs those coefficients with moments of the unshifted T_m
on a spectrum scaled to [0, 1], and drops m = 0; the estimate it gives barely correlates with the
log-det it stands for (r ≈ −0.03 to −0.29 in the reference's check; benchmarks/bench_eigenscore.py
reproduces it). The training scripts then add the exact SVD log-det to it, which defeats the point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llmkit import arch
from llmkit.errors import BadInputError
from llmkit.generation import Backend, GenerationParams, Progress, tokenize_pairs
from llmkit.hooks import last_token, pooled_states

ALPHA = 1e-3
METHODS = ("exact", "ees", "auto")
EES_DTYPE = torch.float32


@dataclass(frozen=True)
class EESConfig:
    """M Chebyshev moments, N_z probes, the probes' seed, and the Lanczos steps that bound the spectrum."""

    moments: int = 40
    probes: int = 10
    seed: int = 0
    bound_steps: int = 20

    def __post_init__(self) -> None:
        for name in ("moments", "probes", "bound_steps"):
            if getattr(self, name) < 1:
                raise BadInputError(f"EES {name} must be at least 1, got {getattr(self, name)}")


def centered(embeddings: torch.Tensor) -> torch.Tensor:
    """J_d applied to each embedding: its mean over the d features subtracted (rows are answers)."""
    if embeddings.dim() != 2 or embeddings.shape[0] < 2:
        raise BadInputError(
            f"EigenScore needs K ≥ 2 embeddings as a (K, d) matrix, got shape {tuple(embeddings.shape)}"
        )
    z = embeddings.double() if embeddings.dtype != torch.float64 else embeddings
    return z - z.mean(dim=1, keepdim=True)


def _gram_side(z: torch.Tensor) -> tuple[bool, int]:
    """Whether the K×K side is the smaller one, and how many eigenvalues equal α on the other side."""
    k, d = z.shape
    return k <= d, max(k - d, 0)


def logdet_exact(z: torch.Tensor, alpha: float = ALPHA) -> float:
    """log det(Z_c Z_cᵀ + αI_K) for centred `z` (K, d), from the eigenvalues of the smaller Gram matrix."""
    rows_side, alpha_only = _gram_side(z)
    gram = z @ z.T if rows_side else z.T @ z
    eigenvalues = torch.linalg.eigvalsh(gram) + alpha
    return float(eigenvalues.clamp_min(alpha).log().sum()) + alpha_only * math.log(alpha)


def lanczos(
    matvec: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ritz values, Ritz vectors (columns) and residual norms ‖A·u − θ·u‖ of the symmetric operator
    `matvec` after `steps` Lanczos steps from `start`, with full reorthogonalisation (and against
    the columns `start` is orthogonal to, since every product stays in `matvec`'s range). Exact
    when the Krylov space closes (steps ≥ the number of distinct eigenvalues)."""
    basis = [start / start.norm()]
    diagonal: list[float] = []
    off: list[float] = []
    beta = 0.0
    for j in range(steps):
        w = matvec(basis[j][:, None])[:, 0]
        diagonal.append(float(basis[j] @ w))
        q = torch.stack(basis, dim=1)
        for _ in range(2):
            w = w - q @ (q.T @ w)
        beta = float(w.norm())
        if j == steps - 1 or beta <= 1e-9 * max(abs(x) for x in diagonal):
            break
        off.append(beta)
        basis.append(w / beta)
    m = len(diagonal)
    tridiagonal = torch.diag(torch.tensor(diagonal, dtype=torch.float64))
    if m > 1:
        band = torch.tensor(off[: m - 1], dtype=torch.float64)
        tridiagonal += torch.diag(band, 1) + torch.diag(band, -1)
    ritz, small = torch.linalg.eigh(tridiagonal)
    vectors = torch.stack(basis[:m], dim=1) @ small.to(start.dtype).to(start.device)
    return ritz, vectors, beta * small[-1].abs()


def chebyshev_log_coefficients(a: float, b: float, moments: int) -> torch.Tensor:
    """c_0..c_{M−1} of log(λ) on [a, b] in T_m(t), λ = (b−a)/2·t + (b+a)/2, by Chebyshev–Gauss
    quadrature: c_m = (2 − δ_m0)/N · Σ_k log(λ(cos θ_k))·cos(m·θ_k), θ_k = π(k + ½)/N."""
    nodes = 4 * moments
    theta = math.pi * (torch.arange(nodes, dtype=torch.float64) + 0.5) / nodes
    values = torch.log((b - a) / 2 * torch.cos(theta) + (b + a) / 2)
    m = torch.arange(moments, dtype=torch.float64)
    coefficients = (torch.cos(m[:, None] * theta[None, :]) * values).sum(1) * 2 / nodes
    coefficients[0] /= 2
    return coefficients


def logdet_ees(z: torch.Tensor, alpha: float = ALPHA, config: EESConfig = EESConfig()) -> float:
    """log det(Z_c Z_cᵀ + αI_K) by the kernel polynomial method (see the module docstring):
    tr(log A) ≈ (1/N_z)·Σ_j Σ_m c_m·v_jᵀ T_m(Ã) v_j, with Ã = (2A − (b+a)I)/(b−a) on [a, b] ⊇ spec(A).

    A polynomial of degree M resolves log only over a spectrum of condition number up to about
    M², and embeddings have a few dominant directions far above the rest; so the top eigenpairs
    that the bounding Lanczos run has converged (relative residual ≤ 1e-6) are taken exactly and
    deflated (the run doubles, up to 8x, until M moments resolve what is left), and the expansion
    runs on the rest of the spectrum, stopping at the first m ≤ M where the coefficients' tail is
    below 1e-6 per eigenvalue. The
    products run in float32: they read Z twice each and are memory-bound, and the expansion's
    error (≈ 1e-3) is far above float32 round-off."""
    rows_side, alpha_only = _gram_side(z)
    n = min(z.shape)
    z = z.to(EES_DTYPE)

    def gram_matvec(v: torch.Tensor) -> torch.Tensor:
        inner = z.T @ v if rows_side else z @ v
        return (z @ inner if rows_side else z.T @ inner) + alpha * v

    generator = torch.Generator().manual_seed(config.seed)
    start = torch.randn(n, generator=generator, dtype=z.dtype).to(z.device)
    steps = min(config.bound_steps, n)
    while True:
        ritz, vectors, residuals = lanczos(gram_matvec, start, steps)
        # A ⪰ αI: a Ritz value below α is float32 round-off, which near a large eigenvalue (all
        # answers alike) can even be negative and would put log's interval below zero.
        ritz = ritz.clamp_min(alpha)
        converged = (residuals <= 1e-6 * ritz.abs()).flip(0).tolist()
        # The smallest Ritz value is never deflated: it bounds what is left.
        deflated = min(next((i for i, ok in enumerate(converged) if not ok), len(converged)), len(ritz) - 1)
        kept = slice(0, len(ritz) - deflated)
        a = max(alpha, float((ritz[kept] - residuals[kept]).min()) * (1 - 1e-2))
        b = float((ritz[kept] + residuals[kept]).max()) * (1 + 1e-2)
        coefficients = chebyshev_log_coefficients(a, b, config.moments)
        # M moments resolve [a, b] when the expansion has converged; else more dominant
        # directions must be deflated: a longer run converges them.
        resolved = float(coefficients[-1].abs()) <= 1e-4
        if resolved or len(ritz) < steps or steps >= min(n, 8 * config.bound_steps):
            break
        steps = min(2 * steps, n, 8 * config.bound_steps)
    top = vectors[:, vectors.shape[1] - deflated :]
    half, middle = (b - a) / 2, (b + a) / 2

    def project(v: torch.Tensor) -> torch.Tensor:
        return v - top @ (top.T @ v) if deflated else v

    def matvec(v: torch.Tensor) -> torch.Tensor:
        """A on the complement of the deflated directions, and the middle of [a, b] on them, so
        that round-off drifting into them stays bounded instead of growing like T_m outside [−1, 1]."""
        inside = project(v)
        return project(gram_matvec(inside)) + middle * (v - inside)

    tail = coefficients.abs().flip(0).cumsum(0).flip(0)
    used = int((tail > 1e-6).sum())
    if config.probes >= n:
        probes, scale = torch.eye(n, dtype=z.dtype, device=z.device), 1.0
    else:
        signs = torch.randint(0, 2, (n, config.probes), generator=generator).to(z.device)
        probes, scale = (2 * signs - 1).to(z.dtype), 1.0 / config.probes
    probes = project(probes)
    terms = []
    previous, current = probes, (matvec(probes) - middle * probes) / half
    terms += [(probes * previous).sum(), (probes * current).sum()]
    for _ in range(2, min(used, config.moments)):
        previous, current = current, 2 * (matvec(current) - middle * current) / half - previous
        terms.append((probes * current).sum())
    moments = torch.stack(terms[: min(used, config.moments)]).double().cpu()
    trace = float(moments @ coefficients[: len(moments)]) * scale
    exact_part = float(ritz[len(ritz) - deflated :].log().sum()) if deflated else 0.0
    return exact_part + trace + alpha_only * math.log(alpha)


def choose_method(num_answers: int, dim: int, config: EESConfig = EESConfig()) -> str:
    """The faster method for a (K, d) matrix, by flop count: the exact Gram product and eigvalsh,
    2·K·d·n + 4n³ with n = min(K, d), against EES's products with Z, 4·K·d per vector, for M blocks
    of N_z probes and the Lanczos steps."""
    n = min(num_answers, dim)
    exact = 2 * num_answers * dim * n + 4 * n**3
    ees = 4 * num_answers * dim * (config.moments * min(config.probes, n) + config.bound_steps)
    return "exact" if exact <= ees else "ees"


def eigenscore(
    embeddings: torch.Tensor, alpha: float = ALPHA, method: str = "exact", config: EESConfig = EESConfig()
) -> float:
    """(1/K)·log det(Zᵀ J_d Z + αI_K) of the K answers' embeddings (rows of `embeddings`), exact,
    by EES, or `auto`: whichever `choose_method` says is faster for this shape."""
    if method not in METHODS:
        raise BadInputError(f"unknown EigenScore method {method!r}; choose one of {', '.join(METHODS)}")
    z = centered(embeddings)
    if method == "auto":
        method = choose_method(*z.shape, config)
    logdet = logdet_exact(z, alpha) if method == "exact" else logdet_ees(z, alpha, config)
    return logdet / z.shape[0]


# ---- from a model's answers ---------------------------------------------------------------------


def middle_layer(model: PreTrainedModel) -> int:
    """INSIDE's middle layer: the block whose output is hidden_states[L // 2] in transformers'
    numbering (index 0 is the embeddings), as INSIDE's code reads it."""
    return max(len(arch.decoder_layers(model)) // 2 - 1, 0)


def answer_embeddings(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    layer: int | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """(N, d) float32: each answer's last token's hidden state at `layer` (the middle layer by
    default), prompt and answer read together as the scorer tokenizes them, in batched forward
    passes that stop at the layer. An empty answer embeds as the prompt's last token."""
    layer = middle_layer(model) if layer is None else layer
    sequences = [context + answer for context, answer in tokenize_pairs(tokenizer, prompts, answers)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return pooled_states(model, sequences, layer, pad, last_token, batch_size)


def sampled_answers(
    backend: Backend,
    model: PreTrainedModel,
    prompts: Sequence[str],
    params: GenerationParams,
    progress: Progress | None = None,
) -> tuple[list[list[str]], list[torch.Tensor]]:
    """For each prompt, its K = `params.num_samples` sampled answers (generated by `backend`, any
    backend) and their (K, d) embeddings (by `model`, the same model on HF), ready for `eigenscore`."""
    if params.num_samples < 2:
        raise BadInputError(f"EigenScore compares K ≥ 2 sampled answers per prompt, got --samples {params.num_samples}")
    texts = [g.texts for g in backend.generate(prompts, params, progress)]
    k = params.num_samples
    embeddings = answer_embeddings(
        model, backend.tokenizer, [p for p in prompts for _ in range(k)], [t for answers in texts for t in answers]
    )
    return texts, list(embeddings.split(k))
