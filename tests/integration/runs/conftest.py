import pytest
from django.apps import apps

from agentops.runtime_config import config_source
from agentops.seed import seed_runtime_defaults

TEST_AGENT_MODULES = "tests.fixtures.test_agents"


@pytest.fixture
def defaults(redis_client, settings):
    """Flushes between transactional tests remove the migration's seed rows; put them back."""
    settings.AGENTOPS_AGENT_MODULES = [TEST_AGENT_MODULES]
    seed_runtime_defaults(apps.get_model)
    config_source().invalidate()
