"""Pretraining's packing (llmkit/world/pretrain.py): whole documents into blocks, never two
documents about one entity in the same block."""

from llmkit.world.pretrain import pack_documents


def test_packing_keeps_documents_about_one_entity_in_different_blocks():
    docs = [[1] * 30, [2] * 30, [3] * 30, [4] * 30, [5] * 100]
    about = [["a"], ["a", "b"], ["c"], ["b"], []]
    packed = pack_documents(docs, 64, 0, about)
    blocks = [[t for t in ids if t] for ids in packed["input_ids"]]
    assert sorted(t for b in blocks for t in b) == sorted(t for d in docs for t in d)  # nothing lost
    for block in blocks:
        owners = [set(about[t - 1]) for t in dict.fromkeys(block)]
        assert all(not a & b for i, a in enumerate(owners) for b in owners[i + 1 :]), block
    assert all(len(ids) == 64 for ids in packed["input_ids"])
    # Padding is masked out of attention and loss; the 100-token document is split across blocks.
    for ids, mask, labels in zip(packed["input_ids"], packed["attention_mask"], packed["labels"]):
        assert [bool(t) for t in ids] == [bool(m) for m in mask] == [label != -100 for label in labels]
    assert sum(5 in b for b in blocks) == 2


def test_packing_without_entities_fills_blocks_in_order():
    packed = pack_documents([[1] * 30, [2] * 30, [3] * 30], 64, 0)
    assert [sorted(set(ids) - {0}) for ids in packed["input_ids"]] == [[1, 2], [3]]
