"""A chain head moved back by a superuser: the break is at the first event the head does not account for."""

from tests.audit.test_verify import _append_committed, _tamper

from cellcommons.audit.verify import verify_database


async def test_a_head_moved_back_names_the_first_event_beyond_it(fresh_settings):
    await _append_committed(fresh_settings, 5)
    moved_back = "UPDATE audit_chain_head SET seq = 3, hash = (SELECT hash FROM audit_event WHERE id = 3)"
    await _tamper(fresh_settings, moved_back)
    result = await verify_database(fresh_settings)
    assert (result.intact, result.broken_seq, result.broken_id, result.count) == (False, 4, 4, 3)
    assert "the chain head says seq 3" in result.problem and "events 4–5 beyond the head" in result.problem
