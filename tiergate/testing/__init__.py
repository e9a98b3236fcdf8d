"""Test and benchmark helpers that stand in for outside services, each as a real process.

    from tiergate.testing import start_stub
    with start_stub(answers={"hi": "hello"}) as stub:     # a real OpenAI-compatible HTTP server
        stub.base_url                                     # http://127.0.0.1:PORT/v1
        stub.control(fail={"count": 2, "status": 503})    # misbehave for the next two requests
        stub.requests()                                   # what it received: method, path, headers, body

Importing this package starts nothing; the server code (`stub_upstream`) loads only in its own process.
"""

from tiergate.testing.stub_process import StubProcess, start_stub, stub_fixture

__all__ = ["StubProcess", "start_stub", "stub_fixture"]
