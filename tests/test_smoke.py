from cmis_repo import Outcome, PlatformConnectionRepository


def test_reconnect_story(db, org_id):
    repo = PlatformConnectionRepository(db)
    first = repo.upsert(org_id, "meta", "act_1", access_token="tok")
    assert first.outcome is Outcome.CREATED
    assert repo.soft_delete(org_id, first.connection.connection_id)
    again = repo.upsert(org_id, "meta", "act_1")
    assert again.outcome is Outcome.RESTORED
    assert again.connection.connection_id == first.connection.connection_id
