"""The only code that changes agents, runs and their step journal, one topic per module (Zulip's
zerver/actions/ is the model): ``agents`` (agent rows), ``lifecycle`` (a run from start to finish, its
lease and its execute_run messages), ``journal`` (a run's steps and their side effects), ``recovery``
(beat: runs whose worker died or whose message was lost). Callers import the topic module."""
