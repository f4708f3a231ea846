"""The API reference's "Testing Integration" block, as written, against a running engine."""

import pytest as _pytest


@_pytest.fixture(autouse=True)
def _running_engine(engine):
    """The services attach to this engine (both placements)."""
    return engine


import pytest
import asyncio
from background_tasks.services.badge_service import assign_daily_badges
from background_tasks.services.presence_service import mark_inactive_users_offline

@pytest.mark.asyncio
async def test_badge_assignment():
    """Test badge assignment functionality"""
    stats = await assign_daily_badges()
    
    assert stats['total_listeners'] >= 0
    assert stats['errors'] == 0
    assert 'basic_assigned' in stats

@pytest.mark.asyncio
async def test_presence_cleanup():
    """Test presence cleanup functionality"""
    count = await mark_inactive_users_offline(inactive_minutes=1)
    
    assert count >= 0
