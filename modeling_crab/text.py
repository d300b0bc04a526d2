"""Transcripts: how the model reads one (`clean_transcript`) and what makes one unusable (`transcript_problem`,
`check_transcript`). Standard library only: it travels with checkpoints, and the manifest checks its rows with it
without torch. The processor, the pipeline and the manifest all check transcripts here.
"""

from __future__ import annotations

import unicodedata


def clean_transcript(text: str) -> str:
    """A transcript as the model reads it: stripped of surrounding whitespace, and the empty transcript (audio only)
    when nothing visible is left: spaces, zero-width spaces, byte-order marks and other invisible format or control
    characters alone are no words."""
    text = text.strip()
    visible = any(not char.isspace() and unicodedata.category(char) not in ("Cf", "Cc") for char in text)
    return text if visible else ""


def transcript_problem(text: str) -> str | None:
    """What makes a transcript string untokenizable (lone surrogates, which UTF-8 cannot encode), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return (
            f"contains a lone surrogate ({text[error.start]!r} at character {error.start}), which is not text: it "
            "comes from bytes decoded with errors='surrogateescape'; decode the original bytes with their real "
            "encoding, or replace it: text.encode('utf-8', 'replace').decode('utf-8')"
        )
    return None


def check_transcript(text, name: str = "transcript") -> None:
    """A transcript is a string the tokenizer can encode; anything else is an error naming it and the fix. The
    processor and the pipeline both check transcripts here."""
    if isinstance(text, (bytes, bytearray)):
        raise TypeError(
            f"{name} is bytes, not a string; decode it first: text.decode('utf-8') "
            "(or .decode('utf-8', errors='replace') when it is not valid UTF-8)"
        )
    if not isinstance(text, str):
        raise TypeError(f"{name} is {type(text).__name__}, not a string; pass the utterance's text")
    problem = transcript_problem(text)
    if problem:
        raise ValueError(f"{name} {problem}")


__all__ = ["check_transcript", "clean_transcript", "transcript_problem"]
