"""The call service's SIP layer on its own: header splitting, malformed input, responses."""

import itertools

from aiosipua import SipMessage

from services.callsvc.sip import _split_quoted, make_response, split_multi_value, tag_of, user_of


def test_fast_header_split_agrees_with_aiosipua_on_every_shape():
    atoms = ["SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1", "INVITE", " ACK ", "", " ", "a;b=c",
             "<sip:x@h;lr>", '"Smith, J" <sip:j@h>', "sip:y@h", ">", "x>y"]
    values = [",".join(combo) for n in (1, 2, 3) for combo in itertools.product(atoms, repeat=n)]
    for value in values:
        assert split_multi_value(value) == _split_quoted(value), value


def test_parsed_message_keeps_each_via_and_allow_entry():
    raw = (b"INVITE sip:1001@127.0.0.1 SIP/2.0\r\n"
           b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKa, SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKb\r\n"
           b"Allow: INVITE, ACK,BYE\r\nFrom: \"Doe, J\" <sip:1000@127.0.0.1>;tag=1\r\n"
           b"To: <sip:1001@127.0.0.1>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    msg = SipMessage.parse(raw)
    assert len(msg.headers.get("via")) == 2
    assert msg.headers.get("allow") == ["INVITE", "ACK", "BYE"]
    assert user_of(msg.headers.get_first("from")) == "1000"


def test_response_copies_the_dialog_headers_and_adds_our_tag():
    req = SipMessage.parse(b"BYE sip:pbx@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKq\r\n"
                           b"From: <sip:1000@h>;tag=abc\r\nTo: <sip:1001@h>\r\nCall-ID: c1\r\n"
                           b"CSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n")
    resp = make_response(req, 200, "mytag")
    assert resp.status_code == 200 and resp.reason_phrase == "OK"
    assert tag_of(resp.headers.get_first("to")) == "mytag"
    assert resp.headers.get_first("cseq") == "7 BYE"
    assert bytes(resp).startswith(b"SIP/2.0 200 OK\r\n")


def _endpoint_fed_by(datagrams, peer_bound_to="127.0.0.1"):
    """A real SipEndpoint on loopback; datagrams sent to it from a peer socket: what it passes up."""
    import asyncio
    import socket

    from services.callsvc.sip import SipEndpoint

    async def run():
        loop = asyncio.get_running_loop()
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind((peer_bound_to, 0))
        seen = []
        transport, endpoint = await loop.create_datagram_endpoint(
            lambda: SipEndpoint(peer.getsockname(), lambda req, tx: seen.append(req)),
            local_addr=("127.0.0.1", 0))
        for data in datagrams:
            peer.sendto(data, endpoint.local)
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        endpoint.close()
        peer.close()
        return seen, endpoint.stats

    return asyncio.run(run())


def _rfc2543_options(call_id: str, via_branch: str = "") -> bytes:
    branch = f";branch={via_branch}" if via_branch else ""
    return (f"OPTIONS sip:pbx@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999{branch}\r\n"
            f"From: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:pbx@127.0.0.1>\r\nCall-ID: {call_id}\r\n"
            "CSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


def test_rfc2543_requests_without_a_unique_branch_are_separate_transactions():
    first, second = _rfc2543_options("old-style-1"), _rfc2543_options("old-style-2")
    legacy_a, legacy_b = _rfc2543_options("old-style-3", "1"), _rfc2543_options("old-style-4", "1")
    seen, _ = _endpoint_fed_by([first, second, first, legacy_a, legacy_b])
    # two different requests each reach the call layer once; the retransmission of the first does not
    assert [m.headers.get_first("call-id") for m in seen] == [
        "old-style-1", "old-style-2", "old-style-3", "old-style-4"]


def test_sip_from_anyone_but_the_edge_is_ignored():
    import asyncio

    from services.callsvc.sip import SipEndpoint

    async def feed():
        endpoint = SipEndpoint(("127.0.0.1", 5060), lambda req, tx: None)
        endpoint.datagram_received(_rfc2543_options("stranger", "z9hG4bKs"), ("127.0.0.1", 5061))
        endpoint.datagram_received(_rfc2543_options("stranger", "z9hG4bKs"), ("127.0.0.2", 5060))
        return endpoint

    endpoint = asyncio.run(feed())
    assert endpoint.stats["foreign"] == 2 and endpoint.server_tx == {}


def test_lingering_clean_ups_run_in_order_after_their_delay_and_leave_no_timer():
    import asyncio

    from services.callsvc.sip import Lingering

    async def run():
        loop = asyncio.get_running_loop()
        linger = Lingering(loop, 0.3)
        linger.SWEEP_S = 0.05
        ran = []
        start = loop.time()
        linger.add(lambda a: ran.append((a, loop.time() - start)), "first")
        await asyncio.sleep(0.1)
        linger.add(lambda a: ran.append((a, loop.time() - start)), "second")
        linger.add(lambda a: 1 / 0, "broken")          # logged, does not stop the others
        linger.add(lambda a: ran.append((a, loop.time() - start)), "third")
        await asyncio.sleep(0.2)
        assert [a for a, _ in ran] == ["first"] and len(linger) == 3
        await asyncio.sleep(0.3)
        assert [a for a, _ in ran] == ["first", "second", "third"]
        assert 0.3 <= ran[0][1] < 0.45 and 0.4 <= ran[1][1] < 0.55, ran
        assert len(linger) == 0 and linger._timer is None   # an idle service has no wake-up
        linger.add(ran.append, "closed")
        linger.close()
        await asyncio.sleep(0.4)
        assert ran[-1][0] == "third"

    asyncio.run(run())


def _shapes():
    """SIP messages of every shape the fast parser must agree with aiosipua on."""
    invite = (b"INVITE sip:1001@127.0.0.1:5080 SIP/2.0\r\n"
              b"Record-Route: <sip:127.0.0.1:5060;lr;ftag=a>\r\n"
              b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKa;rport=5060, SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKb\r\n"
              b"v: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKc\r\n"
              b"From: \"Doe, J\" <sip:1000@127.0.0.1>;tag=1\r\nTo: <sip:1001@127.0.0.1>\r\n"
              b"i: abc@h\r\nCSeq: 1 INVITE\r\nm: <sip:1000@10.0.0.5:5062;transport=udp>\r\n"
              b"Allow: INVITE, ACK,BYE, ,CANCEL\r\nSupported:\r\nX-Custom-thing: a:b:c\r\nx-custom-THING: second\r\n"
              b"Subject:   spaced   \r\nP-Asserted-Identity: <sip:+441632960001@carrier>\r\n"
              b"no colon here\r\nContent-Type: application/sdp\r\nl: 12\r\n\r\nv=0\r\no=- 1 1\r\n")
    yield invite
    yield invite.replace(b"l: 12", b"Content-Length: 5")           # body trimmed to Content-Length
    yield invite.replace(b"l: 12", b"Content-Length: 400")         # short body kept
    yield invite.replace(b"l: 12", b"Content-Length: x")           # unusable length ignored
    yield invite.replace(b"\r\n", b"\n")                             # bare LF: aiosipua's own path
    yield invite.replace(b"Subject:   spaced   \r\n", b"Subject: folded\r\n  on two lines\r\n")
    yield invite.replace(b"Subject:   spaced   \r\n", b"Subject: a\rb\r\n")
    yield invite.split(b"\r\n\r\n")[0]                               # no blank line, no body
    yield b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKx\r\nFrom: <sip:a@h>;tag=1\r\n" \
          b"To: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    yield b"SIP/2.0 200\r\nCall-ID: c\r\n\r\n"
    yield b"SIP/2.0 abc OK\r\nCall-ID: c\r\n\r\n"                     # ValueError either way
    yield b"OPTIONS sip:x\r\nCall-ID: c\r\n\r\n"                      # malformed request line
    yield b"\r\nOPTIONS sip:x SIP/2.0\r\n\r\n"                        # missing start line
    yield b"OPTIONS sip:x SIP/2.0\r\n" + b"X-A: 1\r\n" * 300 + b"\r\n"  # too many headers
    yield "MESSAGE sip:x SIP/2.0\r\nSubject: caf\u00e9 \xff\r\nCall-ID: c\r\n\r\n".encode("latin-1")


def _outcome(parse_fn, raw):
    try:
        msg = parse_fn(raw)
    except ValueError as exc:
        return ("error", str(exc))
    start = (msg.method, msg.uri) if hasattr(msg, "method") else (msg.status_code, msg.reason_phrase)
    return (type(msg).__name__, start, list(msg.headers.items()), msg.body)


def test_fast_parser_gives_aiosipuas_message_for_every_shape():
    from services.callsvc.sip import parse

    for raw in _shapes():
        assert _outcome(parse, raw) == _outcome(SipMessage.parse, raw), raw


def test_fast_encoder_gives_aiosipuas_bytes():
    from services.callsvc.sip import encode, parse

    for raw in _shapes():
        try:
            ours, theirs = parse(raw), SipMessage.parse(raw)
        except ValueError:
            continue
        assert encode(ours) == bytes(theirs), raw
    built = make_response(SipMessage.parse(next(_shapes())), 200, "t1", extra=[("X-Odd-name", "v"), ("cseq", "2 X")],
                          body=b"v=0\r\n")
    assert encode(built) == bytes(make_response(SipMessage.parse(next(_shapes())), 200, "t1",
                                                extra=[("X-Odd-name", "v"), ("cseq", "2 X")], body=b"v=0\r\n"))
