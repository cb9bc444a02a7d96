from xferd.protocol.status import Status, merge


def test_status_only_moves_forward():
    assert merge(Status.Transferring, Status.WaitingForInput) == Status.Transferring
    assert merge(Status.Bootstrapping, Status.Transferring) == Status.Transferring
    assert merge(None, Status.Bootstrapping) == Status.Bootstrapping


def test_failed_overrides_every_live_status_and_terminal_is_final():
    for status in (Status.Bootstrapping, Status.WaitingForInput, Status.Transferring):
        assert merge(status, Status.Failed) == Status.Failed
    assert merge(Status.Failed, Status.Success) == Status.Failed
    assert merge(Status.Success, Status.Failed) == Status.Success  # bytes have landed
