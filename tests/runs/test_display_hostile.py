"""What reaches a terminal, a log or a JSON reader from a hostile registry, artifact or run folder: control
characters (ESC, CR, BEL, C1, bidi overrides) shown as escapes in every table, line, error line and the HTML report;
`-o json` that a strict parser reads (no NaN, no Infinity)."""

from __future__ import annotations

import json
import math

import pytest

from builder.store import Store
from tests.helpers.artifacts import artifact, client_of, run_files
from tests.helpers.attach_world import REPO

HOSTILE = "ok\x1b]0;owned\x07\x1b[2J\r\x9b31m\u202egnp.exe\u2066x\u2028y"
RAW = ("\x1b", "\x07", "\r", "\x9b", "\u202e", "\u2066", "\u2028")


def clean(text: str, where: str = "") -> None:
    """No control character a terminal obeys (newlines and tabs between lines and cells are ours)."""
    bad = sorted({c for c in text if c in RAW or (ord(c) < 32 and c not in "\n\t") or 0x7f <= ord(c) < 0xa0})
    assert not bad, f"{where}: raw {[hex(ord(c)) for c in bad]} in {text[:400]!r}"


def strict(text: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def hostile_run(files: dict[str, bytes]) -> dict[str, bytes]:
    run = json.loads(files["run.json"])
    run["model"]["name"] = HOSTILE
    run["dataset"]["name"] = HOSTILE
    run["dataset"]["label_names"] = {"0": HOSTILE, "1": "[link=http://evil.example]one[/link]", "2": "two"}
    metrics = json.loads(files["metrics.json"])
    metrics["summary"]["accuracy"] = math.nan
    metrics["summary"]["cohen_kappa_score"] = math.inf
    return {**files, "run.json": json.dumps(run).encode(), "metrics.json": json.dumps(metrics).encode()}


def test_a_hostile_listing_and_pulled_run_show_as_escapes_everywhere(cli, world, monkeypatch, tmp_path):
    registry = world["registry"]
    client = client_of(registry)
    notes = {"io.swcli.evaluation.run": HOSTILE, "io.swcli.evaluation.dataset": HOSTILE,
             "io.swcli.evaluation.metric.accuracy": "nan", "io.swcli.evaluation.metric.macro-f1": "inf",
             "org.opencontainers.image.created": HOSTILE}
    files = hostile_run(run_files(world["runs"][0]))
    manifest_digest = artifact(client, client.manifest_descriptor(REPO, "v1"), files, annotations=notes)
    from builder.images.oci import canonical_json

    doc = json.loads(client.get_manifest(REPO, manifest_digest).data)
    client.put_referrer(REPO, canonical_json(doc))  # listed in the fallback index, annotations and all

    table = cli("eval", "list", "--image", world["image"])
    assert table.code == 0, table.err
    clean(table.out, "eval list --image")
    assert "\\x1b" in table.out and "\\u202e" in table.out
    listed = cli("eval", "list", "--image", world["image"], "-o", "json")
    rows = strict(listed.out)
    assert rows[0]["run"] == HOSTILE and rows[0]["metrics"] == {"accuracy": None, "macro-f1": None}
    clean(listed.out, "eval list --image -o json")

    monkeypatch.setenv("SWCLI_HOME", str(tmp_path / "pull-home"))
    pulled = cli("eval", "pull", f"{registry.address}/{REPO}@{manifest_digest}")
    assert pulled.code == 0, pulled.err
    run_id = f"pulled-{manifest_digest[7:19]}"
    for args in (("list",), ("show", run_id), ("diff", run_id, run_id)):
        res = cli("eval", *args)
        assert res.code == 0, (args, res.err)
        clean(res.out + res.err, " ".join(args))
        assert "\\x1b" in res.out, args
        assert "[link=" in res.out or args == ("list",), args  # markup shown as text, never obeyed
    for args in (("list", "-o", "json"), ("show", run_id, "-o", "json"), ("diff", run_id, run_id, "-o", "json")):
        res = cli("eval", *args)
        assert res.code == 0, (args, res.err)
        strict(res.out)
        clean(res.out, " ".join(args))
    shown = strict(cli("eval", "show", run_id, "-o", "json").out)
    assert shown["summary"]["accuracy"] is None and shown["summary"]["cohen_kappa_score"] is None
    assert shown["run"]["model"]["name"] == HOSTILE  # the text itself, JSON-escaped, not changed

    report = tmp_path / "r.html"
    assert cli("eval", "report", run_id, "-o", report).code == 0
    html = report.read_text(encoding="utf-8")
    clean(html, "report")
    assert "\\x1b]0;owned" in html and "[link=http://evil.example]one[/link]" in html


def test_an_error_line_quoting_hostile_text_is_neutralised(cli, world, proxy, monkeypatch, tmp_path):
    from tests.registry_servers import Rule

    # a registry's own words in its error body
    body = json.dumps({"errors": [{"code": "DENIED", "message": HOSTILE}]}).encode()
    proxy.rules.append(Rule("GET", "/manifests/v1", "status", status=403, body=body, content_type="application/json"))
    res = cli("eval", "attach", world["runs"][0], f"{proxy.address}/{REPO}:v1")
    assert res.code == 5 and len(res.err.strip().splitlines()) == 1, res.err
    clean(res.err, "registry error")

    # a pulled run's field name, quoted by the shape check
    registry = world["registry"]
    client = client_of(registry)
    files = run_files(world["runs"][0])
    run = json.loads(files["run.json"])
    run["dataset"]["label_names"] = {HOSTILE: 5}
    digest = artifact(client, client.manifest_descriptor(REPO, "v1"), {**files, "run.json": json.dumps(run).encode()})
    monkeypatch.setenv("SWCLI_HOME", str(tmp_path / "pull-home"))
    res = cli("eval", "pull", f"{registry.address}/{REPO}@{digest}")
    assert res.code == 1 and "label_names" in res.err and len(res.err.strip().splitlines()) == 1, res.err
    clean(res.err, "run.json field")
    assert "\\x1b" in res.err


def test_a_planted_run_folder_name_is_neutralised_in_warnings(cli, swcli_home):
    runs = Store().runs_dir
    runs.mkdir(parents=True)
    (runs / f"x{HOSTILE.replace(chr(0x2028), '')}").mkdir()
    res = cli("eval", "list")
    assert res.code == 0
    clean(res.err, "warning")
    assert "not a run id" in res.err and "\\x1b" in res.err


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_json_output_has_no_nan(capsys, value):
    from builder.cli._output import print_json

    print_json({"a": value, "b": [1.5, value, {"c": value}], "d": (value,)})
    assert strict(capsys.readouterr().out) == {"a": None, "b": [1.5, None, {"c": None}], "d": [None]}


def test_shown_escapes_every_control_and_keeps_text():
    from builder.text import shown

    assert shown("plain naïve 名前 – ok") == "plain naïve 名前 – ok"
    assert shown("a\x1b[31mb\rc\x07\x00\x7f\x85\u202e\u200f\u061c\u2069\u2029") == (
        "a\\x1b[31mb\\x0dc\\x07\\x00\\x7f\\x85\\u202e\\u200f\\u061c\\u2069\\u2029")
    clean(shown("".join(map(chr, range(0x250)))) + shown("\u2028\u2066\u202a"))
