"""Schemathesis hooks for scripts/openapi_fuzz.sh.

Two string rules of Orderly's document count UTF-8 bytes, which a JSON Schema
length cannot state, so the document names them as formats (`password`: 8-72
bytes, bcrypt's limit; `orderly-email`: the registration address rule). These
generators produce values that follow those rules, as a client would send.
"""

import schemathesis
from hypothesis import strategies as st

_ascii = st.characters(min_codepoint=0x20, max_codepoint=0x7E)

schemathesis.openapi.format(
    "password",
    st.one_of(
        st.text(alphabet=_ascii, min_size=8, max_size=72),
        # At most 4 bytes a character: 8-18 characters stay within 72 bytes.
        st.text(min_size=8, max_size=18),
    ),
)

schemathesis.openapi.format(
    "orderly-email",
    st.from_regex(
        r"\A[A-Za-z0-9._%+-]{1,32}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,20}[A-Za-z0-9])?"
        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,20}[A-Za-z0-9])?){1,3}\Z"
    ),
)
