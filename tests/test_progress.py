import io

from onnxprune.progress import Progress


def test_progress_is_silent_off_a_terminal():
    stream = io.StringIO()
    bar = Progress(5, "work", stream=stream)
    for _ in range(5):
        bar.step()
    bar.close()
    assert stream.getvalue() == ""


def test_progress_counts_when_enabled():
    stream = io.StringIO()
    bar = Progress(3, "work", enabled=True, stream=stream)
    for _ in range(3):
        bar.step()
    bar.close()
    assert "work 3/3" in stream.getvalue() and stream.getvalue().endswith("\r")
