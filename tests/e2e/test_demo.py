"""`parcours demo`, the README's first command, on a small population."""

from __future__ import annotations

from streams.dev.demo import run_demo


def test_the_demo_lands_every_event_and_delivers_every_invitation(tmp_path, capsys):
    summary = run_demo(customers=80, seed=3, data_dir=tmp_path, timeout=240)
    out = capsys.readouterr().out
    assert summary["tables"]["touchpoints"] >= summary["customers"] > 0
    assert summary["invitation_count"] > 0
    assert summary["delivered"] == summary["invitation_count"]
    assert "Delivered to the local webhook, each signed and once" in out
    still_open = sum(n for *_, n, _ in summary["follow_ups"])  # detractors, repeated calls
    closed = sum(n for *_, n in summary["follow_ups"])
    assert still_open + closed > 0
    # Each task is delivered when it opens, and again when it closes.
    assert summary["follow_ups_delivered"] == still_open + 2 * closed
    assert "Follow-up tasks for a person" in out
    assert (tmp_path / "demo" / "report.html").stat().st_size > 1000
