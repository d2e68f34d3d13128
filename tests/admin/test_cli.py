"""The real `paynotify status / show / dead-letters / replay` as subprocesses against a real hub."""

from __future__ import annotations

from pathlib import Path

from paynotify.v1 import hub_pb2
from paynotify_hub.tokens import Credential, Principal, Role, Secret, TokenTable
from tests.admin.kit import admin_hub, paynotify
from tests.hub.helpers import publish_pending
from tests.hubkit import free_port, make_notification, publish_async, raw_subscriber

CUSTOMER_ID = "20885028136924G7"
DISPLAY_ID = "buyer@alitest.com"


async def test_status_table_and_json(tmp_path: Path) -> None:
    async with admin_hub(tmp_path, ("billing", "audit:best-effort")) as hub:
        await publish_pending(hub.address, 2, deadline=0.5)
        table = await paynotify("status", "--hub", hub.address)
        assert table.code == 0, table.err
        lines = table.out.splitlines()
        assert lines[0].startswith("hub test-hub at ")
        assert lines[1].split() == [
            "GROUP", "REQUIRED", "PENDING", "IN", "FLIGHT", "DEAD", "OLDEST", "UNACKED", "MEMBERS"
        ]  # fmt: skip
        billing = lines[2].split()
        assert billing[:5] == ["billing", "yes", "2", "0", "0"]
        assert billing[-1] == "0"
        assert lines[3].split()[:2] == ["audit", "no"]
        data = (
            await paynotify("status", "--hub", hub.address, "--json", "--group", "audit")
        ).json()
        [audit] = data["groups"]
        assert (audit["group"], audit["required"], audit["pending"]) == ("audit", False, 2)
        assert audit["oldest_unacked_age_seconds"] > 0


async def test_status_of_several_hubs_tolerates_one_down(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as hub:
        down = f"127.0.0.1:{free_port()}"
        result = await paynotify("status", "--hub", f"{hub.address},{down}", "--timeout", "2")
        assert result.code == 0
        assert down in result.err
        assert "billing" in result.out


async def test_unreachable_hub_exits_3(tmp_path: Path) -> None:
    down = f"127.0.0.1:{free_port()}"
    for command in (["status"], ["show", "P1"], ["dead-letters"]):
        result = await paynotify(*command, "--hub", down, "--timeout", "1")
        assert result.code == 3, (command, result)
        assert down in result.err
        assert "Traceback" not in result.err


async def test_show_masks_customer_ids(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as hub:
        n = make_notification("2020CLISHOW0000001")
        n.psp_customer_info.psp_name = "ALIPAY_CN"
        n.psp_customer_info.psp_customer_id = CUSTOMER_ID
        n.psp_customer_info.display_customer_id = DISPLAY_ID
        async with raw_subscriber(hub.address, "billing", client_id="billing-7") as sub:
            await publish_async(hub.address, n, 0.5)
            [d] = await sub.receive(1)
            await sub.ack(d.delivery_id)
        result = await paynotify("show", "--hub", hub.address, n.payment_request_id)
        assert result.code == 0, result.err
        assert "2020CLISHOW0000001" in result.out
        assert "20****G7" in result.out and "b****@alitest.com" in result.out
        assert CUSTOMER_ID not in result.out and DISPLAY_ID not in result.out
        assert "acked by test-hub/billing-7/" in result.out
        assert "#1 leased to test-hub/billing-7/" in result.out
        data = (await paynotify("show", "--hub", hub.address, "--json", n.payment_id)).json()
        [record] = data
        assert record["notification"]["psp_customer_info"]["psp_customer_id"] == "20****G7"
        assert "raw_json" not in record["notification"]
        assert record["deliveries"][0]["state"] == "DELIVERY_STATE_ACKED"
        unmasked = await paynotify("show", "--hub", hub.address, "--unmasked", n.payment_id)
        assert CUSTOMER_ID in unmasked.out


async def test_show_not_found_exits_1(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as hub:
        result = await paynotify("show", "--hub", hub.address, "2020NOTHERE")
        assert result.code == 1
        assert "2020NOTHERE" in result.err


async def test_dead_letters_then_replay(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as hub:
        empty = await paynotify("dead-letters", "--hub", hub.address)
        assert (empty.code, empty.out.strip()) == (0, "no dead letters")
        [n] = await publish_pending(hub.address, 1, deadline=0.5)
        async with raw_subscriber(hub.address, "billing") as sub:
            [d] = await sub.receive(1)
            await sub.reject(d.delivery_id, "unknown order")
            listed = await paynotify("dead-letters", "--hub", hub.address, "--group", "billing")
            assert listed.code == 0
            [header, row] = listed.out.splitlines()
            assert header.split()[:3] == ["NOTIFICATION", "GROUP", "ATTEMPTS"]
            assert row.split()[:3] == [d.notification_id, "billing", "1"]
            assert row.endswith("unknown order") and n.payment_id in row
            [letter] = (await paynotify("dead-letters", "--hub", hub.address, "--json")).json()
            assert (letter["reason"], letter["notification"]["payment_id"]) == (
                "unknown order",
                n.payment_id,
            )
            args = ["replay", "--hub", hub.address, "--group", "billing"]
            target = ["--notification-id", d.notification_id]
            refused = await paynotify(*args, *target)
            assert refused.code == 2 and "--yes" in refused.err
            done = await paynotify(*args, *target, "--yes")
            assert done.code == 0, done.err
            assert "replayed 1" in done.out
            [again] = await sub.receive(1)
            assert again.notification_id == d.notification_id
            twice = await paynotify(*args, *target, "--yes")
            assert twice.code == 1 and "not a dead letter" in twice.err
            await sub.ack(again.delivery_id)


async def test_replay_since(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as hub:
        async with raw_subscriber(hub.address, "billing") as sub:
            await publish_pending(hub.address, 2, deadline=0.3)
            for d in await sub.receive(2):
                [acked] = await sub.ack(d.delivery_id)
                assert acked.status == hub_pb2.ACTION_STATUS_OK
            args = ["replay", "--hub", hub.address, "--group", "billing", "--yes", "--json"]
            result = await paynotify(*args, "--since", "1h")
            assert result.code == 0, result.err
            assert result.json() == {"group": "billing", "replayed": 2}
            assert len(await sub.receive(2)) == 2
        future = await paynotify(*args, "--since", "2999-01-01T00:00:00Z")
        assert future.code == 1
        naive = await paynotify(*args, "--since", "2026-01-01T00:00:00")
        assert naive.code == 2 and "offset" in naive.err


async def test_bad_usage_exits_2(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as hub:
        missing = await paynotify("replay", "--hub", hub.address, "--group", "billing")
        assert missing.code == 2
        unknown = await paynotify(
            "replay", "--hub", hub.address, "--group", "nobody", "--notification-id", "1", "--yes"
        )
        assert unknown.code == 1 and "nobody" in unknown.err
        invalid = await paynotify("status", "--hub", hub.address, "--group", "Bad Name")
        assert invalid.code == 2


async def test_admin_token(tmp_path: Path) -> None:
    token = "admin-token-0123456789abcdef"
    admin = Credential(Principal(Role.ADMIN), Secret(token), "test")
    async with admin_hub(tmp_path, tokens=TokenTable((admin,))) as hub:
        missing = await paynotify("status", "--hub", hub.address)
        assert missing.code == 4 and "unauthenticated" in missing.err
        assert token not in missing.err
        token_file = tmp_path / "admin.token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        ok = await paynotify("status", "--hub", hub.address, "--admin-token-file", str(token_file))
        assert ok.code == 0, ok.err
        nofile = await paynotify("status", "--hub", hub.address, "--admin-token-file", "/nope")
        assert nofile.code == 2 and "/nope" in nofile.err
