"""The demo's agent functions (support_refund, research) and the tools they call. They register like any
deployment's agents: agentops.runs.registry imports the modules settings.AGENTOPS_BUILTIN_AGENT_MODULES names."""
