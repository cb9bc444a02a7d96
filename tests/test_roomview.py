from xferd.state.connections import redact
from xferd.ops.roomview import render
from xferd.protocol.layout import parse_layout
from xferd.transfer.pool import describe_pool
from xferd.protocol.wire import Init, Register


def test_inspect_shows_failure_reason_and_destinations(store):
    store.register_session(Register("127.0.0.1", 7000, "127.0.0.1:9000", (1, 2, 3, 4)))
    store.dst_init(Init(31, "127.0.0.1", 7000, "127.0.0.1:9000", (4, 5), 1, 256))
    store.fail_room(31, "aborted by language session 127.0.0.1:9000")
    text = render(store, 31, "redis://admin:s3cret-pass@db.internal:6379/0")
    assert "Failed" in text and "aborted by language session 127.0.0.1:9000" in text
    assert "127.0.0.1:9000 -> status 127.0.0.1:7000" in text and "blocks 4,5" in text
    assert "s3cret-pass" not in text and "db.internal" in text


def test_inspect_shows_the_node_layout_and_a_one_round_init(store):
    layout = parse_layout("deepstack:2", 128, 64)
    store.init_pool(8, describe_pool(layout, 8, "xferd-inspect-test"))
    store.register_session(Register("127.0.0.1", 7000, "127.0.0.1:9000", (1, 2, 3, 4, 5)))
    store.dst_init(Init(32, "127.0.0.1", 7000, "127.0.0.1:9000", (4, 5), 1, None))
    text = render(store, 32, None)
    assert f"block_size 128: {layout.spec()}" in text and "deepstack_embeddings=256/token" in text
    assert "allocated 256" in text and "6-frame init: all in one round" in text


def test_inspect_unknown_room(store):
    assert "no record" in render(store, 999, None)


def test_redact_hides_passwords_in_every_url_form():
    assert redact("redis://:pw@h:6379/0") == "redis://***@h:6379/0"
    assert redact("rediss://user:pw@h:6380") == "rediss://user:***@h:6380"
    assert redact("unix:///tmp/redis.sock") == "unix:///tmp/redis.sock"
    assert "pw" not in redact("redis://user:pw@h")
    assert redact("redis://h:6379/0?password=pw&db=2") == "redis://h:6379/0?password=***&db=2"
    assert redact("unix:///tmp/r.sock?password=pw") == "unix:///tmp/r.sock?password=***"
