import pytest


@pytest.mark.django_db
def test_health_is_open(api):
    response = api.get("/v1/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.content.startswith(b'{"status":"ok"')
