"""The MAG-V pipeline, one module per stage in data-flow order (generate, select, respond,
reverse, features, labels, train, score, judge), with what they share: `base` (StageReport,
AgentStage), `worker` (what a chunk of work needs), `session` (one recorded run), `runner` (runs
stages in chunks) and `cost` (what work will cost). docs/architecture.md has the map."""
