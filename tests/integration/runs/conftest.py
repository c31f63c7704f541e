import pytest

from agentops.config.source import config_source
from tests.fixtures.stack import reseed_runtime

TEST_AGENT_MODULES = "tests.fixtures.test_agents"


@pytest.fixture
def defaults(redis_client, settings):
    """Flushes between transactional tests remove the migration's seed rows; put them back."""
    settings.AGENTOPS_AGENT_MODULES = [TEST_AGENT_MODULES]
    reseed_runtime()
    config_source().invalidate()
