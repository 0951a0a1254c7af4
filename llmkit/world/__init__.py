"""The synthetic world: a seeded generator of fictional people, facts, skills, misinformation and
a search corpus (`generator`), the probe forms every fact is rendered in (`forms`), and the recipe
that pretrains a tiny model on it from scratch (`pretrain`)."""
