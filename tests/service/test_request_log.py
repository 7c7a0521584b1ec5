"""The request log: every request, refused ones too, is a row before its answer leaves; no key in clear, no row
value; batches sealed in the ledger and verifiable; the sharing transactions count the answered ones."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

import psycopg
import pytest

from ndc.service import requestlog
from ndc.warehouse import database
from tests.service.conftest import QN, QN_AGREEMENT, VSS, free_port, start_server, stop_server

COLUMNS = {"requested_at", "batch_id", "seq", "operation", "status", "reason", "agency", "login", "agreement_id",
           "agreement_sha256", "purpose", "view", "key_digest", "returned_digests", "rows", "db_ms", "total_ms",
           "publication_id", "contract_version"}


def _pin(server) -> str:
    with psycopg.connect(server.deployment.admin, autocommit=True) as conn:
        return conn.execute("select citizen_id from shared.citizens where current_province_code = '51'"
                            " order by citizen_id limit 1 offset 3").fetchone()[0]


def _digest(server, pin: str) -> str:
    with psycopg.connect(server.deployment.admin, autocommit=True) as conn:
        return conn.execute("select digest from ndc_meta.key_digests(%s) where agreement_id = %s",
                            (pin, QN_AGREEMENT)).fetchone()[0]


def _log(server, since: int) -> list[tuple]:
    with psycopg.connect(server.deployment.admin, autocommit=True) as conn:
        return conn.execute("select status, operation, agency, key_digest, rows, row_to_json(r)::text"
                            " from ndc_meta.service_requests r where batch_id > %s"
                            " order by batch_id, seq", (since,)).fetchall()


def _last_batch(server) -> int:
    with psycopg.connect(server.deployment.admin, autocommit=True) as conn:
        return conn.execute("select coalesce(max(batch_id), 0) from ndc_meta.service_requests").fetchone()[0]


def test_every_request_is_logged_before_its_answer_with_no_key_in_clear(server):
    pin = _pin(server)
    digest = _digest(server, pin)
    path = f"/v1/agreements/{QN_AGREEMENT}/views/citizens/records/{digest}"
    since = _last_batch(server)
    time.sleep(0.7)  # the open batch sealed (NDC_SERVICE_BATCH_SECONDS = 0.5): what follows opens a new one
    sent_before = len(server.sent)
    answers = [server.get(path, token=server.token(QN), purpose="public_services"),
               server.get(path, token=None, purpose="public_services"),
               server.get(path, token=server.token(QN), purpose="employer_check"),
               server.get(path, token=server.token(QN)),
               server.get(f"/v1/agreements/{QN_AGREEMENT}/views/citizens/records/{pin}", token=server.token(QN),
                          purpose="public_services"),
               server.get(f"/v1/agreements/{QN_AGREEMENT}/views/citizens/records/bad%20key", token=server.token(QN)),
               server.get("/v1/no/such/path", token=server.token(QN))]
    assert [a.status_code for a in answers] == [200, 401, 403, 400, 400, 400, 404]
    logged = _log(server, since)  # read right after the answers: each row was committed before its answer left
    sent = [status for _, status in server.sent[sent_before:]]
    assert Counter(r[0] for r in logged) == Counter(sent)
    answered = [r for r in logged if r[0] == 200]
    assert [(r[1], r[2], r[3], r[4]) for r in answered] == [("lookup", QN, digest, 1)]
    assert sum(1 for r in logged if r[3] == digest) == 4  # answered, no token, wrong purpose, no purpose
    for row in logged:
        assert pin not in row[5]  # the PIN given in clear to a pseudonym view is not kept either
    with psycopg.connect(server.deployment.admin, autocommit=True) as conn:
        columns = {r[0] for r in conn.execute("select column_name from information_schema.columns where"
                                              " table_schema = 'ndc_meta' and table_name = 'service_requests'")}
    assert columns == COLUMNS  # no column for a row's values


@pytest.mark.parametrize("who", ["runtime", "service"])
def test_the_log_is_append_only(server, who):
    url = server.deployment.runtime if who == "runtime" else server.deployment.service
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in ("update ndc_meta.service_requests set rows = 0", "delete from ndc_meta.service_requests",
                          "truncate ndc_meta.service_requests"):
            with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.RaiseException)):
                conn.execute(statement)
        if who == "runtime":
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("insert into ndc_meta.service_requests (requested_at, batch_id, seq, operation,"
                             " status, rows) values (now(), 1, 1, 'lookup', 200, 1)")


def test_batches_are_sealed_in_the_ledger_and_a_changed_row_is_found(server):
    since = _last_batch(server)
    port = free_port()
    process = start_server(server.deployment, port, {"NDC_SERVICE_BATCH_SECONDS": "600"})
    pin = _pin(server)
    own = type(server)(f"http://127.0.0.1:{port}", server.sharing, server.tokens, process)
    for _ in range(5):
        assert own.get(f"/v1/agreements/{QN_AGREEMENT}/views/citizens/records/{_digest(server, pin)}",
                       token=server.token(QN), purpose="public_services").status_code == 200
    stop_server(process)  # the graceful stop seals the open batch (long before its 600 s)
    with psycopg.connect(server.deployment.admin, autocommit=True) as conn:
        batches = conn.execute("select batch_id, count(*) from ndc_meta.service_requests where batch_id > %s"
                               " and login = %s group by 1", (since, server.sharing.logins[QN][0])).fetchall()
        mine = [b for b, n in batches if n == 5]
        assert len(mine) == 1
        sealed = conn.execute("select details from ndc_meta.ledger where kind = 'service_requests'"
                              " and (details->>'batch_id')::bigint = %s", (mine[0],)).fetchall()
        assert len(sealed) == 1 and sealed[0][0]["requests"] == 5
        assert sealed[0][0]["counts"] == [{"agency": QN, "view": "citizens", "answered": 5, "rows": 5, "refused": 0}]
    with database.connect(server.deployment.runtime) as conn:
        checked, problems = requestlog.verify(conn)
    assert checked >= 1 and problems == []
    with psycopg.connect(server.deployment.admin, autocommit=True) as conn:  # the superuser, past the trigger
        conn.execute("alter table ndc_meta.service_requests disable trigger service_requests_append_only")
        try:
            conn.execute("update ndc_meta.service_requests set rows = 0 where batch_id = %s and seq = 2", (mine[0],))
            with database.connect(server.deployment.runtime) as check:
                _, problems = requestlog.verify(check)
            conn.execute("update ndc_meta.service_requests set rows = 1 where batch_id = %s and seq = 2", (mine[0],))
        finally:
            conn.execute("alter table ndc_meta.service_requests enable trigger service_requests_append_only")
    assert len(problems) == 1 and f"request batch {mine[0]} " in problems[0]


def test_sharing_transactions_count_the_answered_requests(server):
    time.sleep(0.7)  # every open batch sealed
    with psycopg.connect(server.deployment.admin, autocommit=True) as conn:
        answered = dict(conn.execute("select agency, count(*) from ndc_meta.service_requests where status = 200"
                                     " and agency in (%s, %s) group by 1", (QN, VSS)).fetchall())
        counted = dict(conn.execute("select agency, sum(transactions) from ndc_meta.sharing_transactions"
                                    " where unit = 'request' and agency in (%s, %s) group by 1", (QN, VSS)).fetchall())
        operator = dict(conn.execute("select agency, sum(transactions) from ndc_meta.ops_sharing_transactions"
                                     " where unit = 'request' and agency in (%s, %s) group by 1", (QN, VSS)).fetchall())
    assert answered[QN] > 0 and answered[VSS] > 0
    assert counted == answered
    assert operator == answered


def test_a_batch_a_killed_service_left_open_is_sealed_late(server):
    since = _last_batch(server)
    port = free_port()
    process = start_server(server.deployment, port, {"NDC_SERVICE_BATCH_SECONDS": "600"})
    own = type(server)(f"http://127.0.0.1:{port}", server.sharing, server.tokens, process)
    path = f"/v1/agreements/{QN_AGREEMENT}/views/citizens/records/{_digest(server, _pin(server))}"
    for _ in range(3):
        assert own.get(path, token=server.token(QN), purpose="public_services").status_code == 200
    process.kill()  # no graceful stop: the open batch is not sealed
    process.wait(timeout=30)
    process.output.unlink()
    with psycopg.connect(server.deployment.admin, autocommit=True) as conn:
        left = [r[0] for r in conn.execute(
            "select distinct batch_id from ndc_meta.service_requests r where batch_id > %s and login = %s and not"
            " exists (select from ndc_meta.ledger l where l.kind = 'service_requests'"
            " and (l.details->>'batch_id')::bigint = r.batch_id)", (since, server.sharing.logins[QN][0]))]
    assert len(left) == 1
    with database.connect(server.deployment.runtime) as conn:
        sealed = requestlog.seal_unsealed(conn, timedelta(0))
        _, problems = requestlog.verify(conn)
        details = conn.execute("select details from ndc_meta.ledger where kind = 'service_requests'"
                               " and (details->>'batch_id')::bigint = %s", (left[0],)).fetchone()[0]
    assert left[0] in sealed and problems == []
    assert (details["requests"], details["late"]) == (3, True)
