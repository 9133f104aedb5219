

def test_an_at_sign_after_the_host_is_not_taken_for_credentials() -> None:
    from shared.webhooks import validate_url

    # Found by the fuzz test: '@' in a fragment or a query is not userinfo.
    for url in ("http://hooks.example.com#k!05@", "https://hooks.example.com/x?to=a@b"):
        assert validate_url(url) == url
