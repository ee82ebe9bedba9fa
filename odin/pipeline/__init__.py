"""The watched-folder pipeline (`odin-pipeline`): inbox -> crawl -> preprocess -> tokenize -> train.

Modules, one per concern, each with a small interface:

==================  ====================================================================
config              pipeline.toml: load, validate (messages name the key), folder layout
store               pipeline.db (SQLite, WAL): items, shards, events, dedupe indexes
watcher             the inbox: watchdog events + rescans, readiness of files
crawler             reading inbox files, URL lists; polite HTTP(S) fetching with robots.txt
intake              ready inbox files -> raw/ (crash-safe order), URL lists expanded
preprocess          bytes -> clean text; exact and near-duplicate detection
tokenize_stage      the fixed BPE tokenizer; packing texts into shards
shards              the shard file format; deterministic training windows
trainer_stage       continual training with checkpoint-backed exactly-once accounting
quarantine          retries with backoff, quarantine/ with reason files
status              notification lines, the status line, `odin-pipeline status`
runner              the stages as threads; start-up recovery; shutdown
cli                 the `odin-pipeline` command
==================  ====================================================================

The user guide is docs/pipeline.md.
"""
