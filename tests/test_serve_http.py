"""zhangcolor serve over HTTP: the headers every answer carries (nosniff, a CSP the page works
under, no framing), the Host allow-list, 405s with Allow and HEAD of the page, what /healthz and
refusals may show, and file names in and out (non-ASCII names, filename*)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from makers import photo_bytes
from test_serve import make_service, post

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from fastapi.testclient import TestClient

from zhangcolor import serve
from zhangcolor.serve import ColorizeService, background_server, create_app, static_dir
from zhangcolor.serve.guard import host_name, is_allowed
from zhangcolor.serve.names import DownloadName, part_filename


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> ColorizeService:
    return make_service(tmp_path_factory)


@pytest.fixture
def client(service):
    with TestClient(create_app(service=service)) as client:
        yield client


def test_every_answer_says_nosniff_and_no_framing_and_the_page_gets_a_strict_csp(client):
    answers = {
        "page": client.get("/"),
        "script": client.get("/static/app.js"),
        "json": client.get("/healthz"),
        "image": post(client, photo_bytes(1)),
        "refusal": post(client, b"not an image"),
        "not found": client.get("/nowhere"),
    }
    for name, answer in answers.items():
        headers = answer.headers
        assert headers["x-content-type-options"] == "nosniff", name
        assert headers["x-frame-options"] == "DENY", name
        csp = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp, name
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, name


@pytest.mark.parametrize("page", ["index.html", "api.html"])
def test_the_pages_have_no_inline_script_or_style_for_the_csp_to_block(page):
    html = (static_dir() / page).read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline script"
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html), "an inline style or handler"


def test_405s_say_what_is_allowed_and_head_of_the_page_works(client):
    for method, path, allowed in [
        ("POST", "/", {"GET", "HEAD"}),
        ("TRACE", "/api/colorize", {"POST"}),
        ("DELETE", "/healthz", {"GET"}),
        ("PUT", "/static/app.js", {"GET", "HEAD"}),
    ]:
        answer = client.request(method, path)
        assert answer.status_code == 405, (method, path)
        assert {m.strip() for m in answer.headers["allow"].split(",")} == allowed, (method, path)
        assert answer.json()["error"] == "method_not_allowed"
    head = client.head("/")
    assert head.status_code == 200 and head.headers["content-type"].startswith("text/html")
    assert head.content == b""
    assert client.head("/docs").status_code == 200


def test_healthz_names_the_model_without_its_path_and_refusals_show_no_reprs(client, service):
    folder = str(Path(service.config.model).parent)
    health = client.get("/healthz")
    assert health.json()["model"] == "tiny.safetensors" and folder not in health.text
    assert folder not in client.get("/api/model").text
    for data in (b"hello", photo_bytes(2)[:40]):
        refusal = post(client, data, name="notes.jpg")
        assert refusal.status_code == 415
        detail = refusal.json()["detail"]
        assert " at 0x" not in detail and "<_io" not in detail and "BytesIO" not in detail, detail
        assert detail.startswith("notes.jpg: ") and detail.count("notes.jpg") == 1


def test_download_names_keep_non_ascii_characters_beside_an_ascii_fallback(client):
    answer = post(client, photo_bytes(3), name="été à Paris ☀.png")
    assert answer.headers["content-disposition"] == (
        "inline; filename=\"ete a Paris-colorized-T0.38.png\"; filename*=UTF-8''"
        "%C3%A9t%C3%A9%20%C3%A0%20Paris%20%E2%98%80-colorized-T0.38.png"
    )
    upload_id = answer.headers["x-upload-id"]
    named = client.get(f"/api/colorize/{upload_id}", params={"name": "日本.jpg", "temperature": 1})
    assert named.headers["content-disposition"] == (
        "inline; filename=\"image-colorized-T1.png\"; filename*=UTF-8''"
        "%E6%97%A5%E6%9C%AC-colorized-T1.png"
    )
    assert DownloadName.of("plain.png", ".x").content_disposition() == 'inline; filename="plain.x"'


def test_an_uploads_filename_star_is_read(client):
    """RFC 7578 clients send UTF-8 in filename; others send RFC 5987's filename* beside an ASCII
    filename: that one is the file's real name."""
    data = (
        b'--XyZ\r\nContent-Disposition: form-data; name="image"; filename="caf_.png"; '
        b"filename*=UTF-8''caf%C3%A9.png\r\nContent-Type: image/png\r\n\r\n"
        + photo_bytes(4)
        + b"\r\n--XyZ--\r\n"
    )
    answer = client.post(
        "/api/colorize",
        content=data,
        headers={"content-type": "multipart/form-data; boundary=XyZ"},
    )
    assert answer.status_code == 200, answer.text
    assert "filename*=UTF-8''caf%C3%A9-colorized" in answer.headers["content-disposition"]
    assert part_filename(b'form-data; filename="a.png"', b"a.png") == "a.png"
    assert part_filename(b"form-data; filename*=iso-8859-1''%E9t%E9.png", None) == "été.png"
    assert part_filename(b'form-data; name="image"', None) is None


def test_safe_stem_keeps_a_readable_name_and_nothing_else():
    assert serve.safe_stem("holiday photo.jpg") == "holiday photo"
    assert serve.safe_stem("a\0b\r\nc\x7f\u202egpj.png") == "abcgpj"
    assert serve.safe_stem("../../etc/passwd") == "passwd"
    assert serve.safe_stem("C:\\Users\\me\\x.png") == "x"
    assert serve.safe_stem('say "cheese".png') == "say cheese"
    assert serve.safe_stem("..") == serve.safe_stem("\0") == serve.safe_stem(None) == "image"
    assert serve.safe_stem("é" * 500 + ".png") == "é" * 100


def test_host_names_are_read_as_browsers_send_them():
    assert host_name("Example.COM:8000") == "example.com"
    assert host_name("[::1]:8000") == "::1" and host_name("127.0.0.1") == "127.0.0.1"
    assert host_name("photos.example.") == "photos.example"
    names = frozenset({"photos.example", "127.0.0.1"})
    for host in ("localhost:8000", "app.localhost", "10.1.2.3:80", "[::1]:1", "photos.example"):
        assert is_allowed(host, names), host
    for host in ("evil.example", "localhost.evil.example", "127.0.0.1.nip.io"):
        assert not is_allowed(host, names), host
    assert is_allowed(None, names) and is_allowed("anything", None)


def test_a_local_server_answers_only_its_own_host_names(service):
    """DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 sends
    Host: evil.example; the server must not answer it (nor show it a result)."""
    import dataclasses

    configs = {
        "default": service.config,
        "allowed": dataclasses.replace(service.config, allowed_hosts=("photos.example",)),
        "any": dataclasses.replace(service.config, allowed_hosts=("*",)),
    }
    for name, config in configs.items():
        app = create_app(service=ColorizeService(service.colorizer, config))
        with background_server(app) as url, httpx.Client(base_url=url) as http:
            port = url.rsplit(":", 1)[1]
            for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
                assert http.get("/healthz", headers={"host": host}).status_code == 200, host
            evil = http.get("/", headers={"host": "evil.example"})
            photos = http.get("/healthz", headers={"host": "photos.example"})
            if name == "any":
                assert evil.status_code == 200
                continue
            assert evil.status_code == 400 and evil.json()["error"] == "bad_host", evil.text
            assert evil.headers["x-content-type-options"] == "nosniff"
            assert photos.status_code == (200 if name == "allowed" else 400)
