"""The one-time codes admin: who was sent a code and what became of it, never the code."""

from mailqueue.models import EmailJob
from otp.models import OneTimeCode


def test_the_list_and_detail_show_the_code_s_fate_but_neither_code_nor_hash(issue, admin_client):
    row = OneTimeCode.objects.get(pk=issue(length=8).json()["id"])
    code = EmailJob.objects.get(pk=row.email_id).context["code"]

    listing = admin_client.get("/admin/otp/onetimecode/")
    detail = admin_client.get(f"/admin/otp/onetimecode/{row.pk}/change/")
    found = admin_client.get("/admin/otp/onetimecode/", {"q": "ADA@"})

    assert listing.status_code == detail.status_code == found.status_code == 200
    for response in (listing, detail, found):
        page = response.content.decode()
        assert "ada@example.com" in page
        assert code not in page
        assert row.code_hash not in page
    assert "pending" in listing.content.decode()
    # Read-only: nothing to type in, nothing to add.
    assert 'name="address"' not in detail.content.decode()
    assert 'href="/admin/otp/onetimecode/add/"' not in listing.content.decode()
