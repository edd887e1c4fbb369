#!/usr/bin/env python3
"""A triad client in Python, written from proto/triad/v1/triad.proto alone.

Submits a job through one master (any master: writes are forwarded to the leader), waits for it
to finish, reads it back with its tasks, and lists the cluster's jobs.

    pip install -r requirements.txt
    export TRIAD_CA=triad-dev/tls/ca.pem TRIAD_TOKEN=$(cat triad-dev/tokens/client.token)
    python triad_example.py --master 127.0.0.1:7101                  # echo hello from python
    python triad_example.py --master 127.0.0.1:7102 -- sh -c 'echo $TRIAD_JOB_ID'

The connection is TLS, verifying the master's certificate against the cluster CA (--ca, default
$TRIAD_CA) under the name every master's certificate carries, master.triad (whatever address it is
dialled at); every call carries the bearer token (--token, default $TRIAD_TOKEN) as
`authorization: Bearer triad_...`. --insecure (or TRIAD_INSECURE=true) is plaintext with no token,
only for a cluster run with insecure = true.

The stubs are generated at start (generate.py) into a temporary folder, or into --gen-dir.
Exit status 0 when the job succeeded, 1 otherwise (with a one-line error on stderr).
"""
import argparse
import os
import sys
import tempfile
import time
import uuid

import grpc

import generate

TERMINAL = {"succeeded", "failed", "cancelled"}
# The DNS name in every master's certificate (`triad tls cert create --role master`), which clients
# verify a master by, whichever address they dial.
MASTER_NAME = "master.triad"
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def load_stubs(gen_dir):
    generate.generate(gen_dir)
    sys.path.insert(0, gen_dir)
    from triad.v1 import triad_pb2, triad_pb2_grpc  # noqa: E402 (generated just above)

    return triad_pb2, triad_pb2_grpc


def call(fn, request, deadline, per_call=5.0):
    """Calls fn(request), retrying UNAVAILABLE / DEADLINE_EXCEEDED (a leader election, a master
    restarting) until `deadline`. Safe for submissions because they carry an idempotency key."""
    delay = 0.1
    while True:
        try:
            return fn(request, timeout=per_call)
        except grpc.RpcError as e:
            if e.code() not in RETRYABLE or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def channel_to(master, ca_file, token, insecure):
    """A channel to one master: TLS against the cluster CA with the token on every call, or
    plaintext for an insecure cluster."""
    if insecure:
        return grpc.insecure_channel(master)
    if not ca_file:
        raise ValueError("no CA certificate: pass --ca or set TRIAD_CA (or --insecure for an insecure cluster)")
    with open(ca_file, "rb") as f:
        tls = grpc.ssl_channel_credentials(root_certificates=f.read())
    creds = tls
    if token:
        # Adds `authorization: Bearer <token>` to every call (only ever sent over TLS).
        creds = grpc.composite_channel_credentials(tls, grpc.access_token_call_credentials(token))
    return grpc.secure_channel(master, creds, options=[("grpc.ssl_target_name_override", MASTER_NAME)])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_master = (os.environ.get("TRIAD_MASTERS") or "127.0.0.1:7101").split(",")[0]
    p.add_argument("--master", default=default_master, help="one master, host:port (default: first of $TRIAD_MASTERS)")
    p.add_argument("--ca", default=os.environ.get("TRIAD_CA"), help="the cluster CA certificate, PEM (default $TRIAD_CA)")
    p.add_argument("--token", default=os.environ.get("TRIAD_TOKEN"), help="bearer token, triad_... (default $TRIAD_TOKEN)")
    p.add_argument("--insecure", action="store_true",
                   default=os.environ.get("TRIAD_INSECURE", "").lower() in ("1", "true"),
                   help="plaintext, no token: only for a cluster run with insecure = true")
    p.add_argument("--gen-dir", help="where to generate the stubs (default: a temporary folder)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the job (default 60)")
    p.add_argument("--tasks", type=int, default=1, help="task count (at least 1)")
    # Batch semantics: failure policy, deadline, parallelism, partial success, dependencies.
    p.add_argument("--parallelism", type=int, default=0, help="most tasks running at once (0: no cap)")
    p.add_argument("--deadline", type=float, default=0, help="seconds from submission; then failed, reason deadline")
    p.add_argument("--max-lost", type=int, default=0, help="lost attempts per task (0: the default, 20)")
    p.add_argument("--fail-on-exit", type=int, action="append", default=[], help="exit code that fails a task at once")
    p.add_argument("--max-failed-tasks", type=int, default=0, help="failed tasks the job may have and still succeed")
    p.add_argument("--after", action="append", default=[], help="ID[:ok|:any]: wait for that job first")
    p.add_argument("command", nargs="*", default=["echo", "hello from python"], help="after --: command and args")
    a = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="triad-stubs-") as tmp:
        pb, pb_grpc = load_stubs(a.gen_dir or tmp)
        deadline = time.monotonic() + a.timeout
        token = (a.token or "").strip()
        with channel_to(a.master, a.ca, token, a.insecure) as channel:
            jobs = pb_grpc.JobServiceStub(channel)

            after = []
            for d in a.after:
                job_id, _, cond = d.partition(":")
                after.append(pb.Dependency(job_id=job_id, any=(cond == "any")))
            spec = pb.JobSpec(command=a.command[0], args=a.command[1:], task_count=a.tasks,
                              parallelism=a.parallelism, deadline_ms=int(a.deadline * 1000),
                              max_lost=a.max_lost, fail_on_exit=a.fail_on_exit,
                              max_failed_tasks=a.max_failed_tasks, after=after)
            req = pb.SubmitJobRequest(name="python-example", idempotency_key=str(uuid.uuid4()), spec=spec)
            resp = call(jobs.SubmitJob, req, deadline)
            print(f"submitted job {resp.job_id} (created: {resp.created}) through {a.master}")

            # Poll with linearizable reads (the default consistency) until a terminal state.
            while True:
                job = call(jobs.GetJob, pb.GetJobRequest(job_id=resp.job_id), deadline).job
                if job.state in TERMINAL:
                    break
                if job.waiting:
                    print(f"job {job.id} waiting on {', '.join(job.waiting_on)}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"job {job.id} still {job.state} after {a.timeout:.0f} s")
                time.sleep(0.2)

            c = job.counts
            reason = f", reason {job.reason}" if job.reason else ""
            print(f"job {job.id} state {job.state}{reason} ({c.succeeded}/{job.spec.task_count} tasks "
                  f"succeeded, {job.failed_tasks} failed)")
            for t in job.tasks:
                print(f"  task {t.index}: {t.state}, {t.failed_attempts} failed and {t.lost_attempts} lost attempts")
                for at in t.attempts:
                    code = at.exit_code if at.has_exit_code else "-"
                    print(f"  task {t.index} attempt {at.number}: {at.state} on {at.executor}, "
                          f"fencing token {at.token}, exit code {code}")

            listed = call(jobs.ListJobs, pb.ListJobsRequest(page_size=1000), deadline)
            ids = {j.id for j in listed.jobs}
            print(f"listed {len(listed.jobs)} job(s); {job.id} {'is' if job.id in ids else 'is NOT'} among them")
            if job.id not in ids:
                raise RuntimeError(f"job {job.id} missing from ListJobs")
            return 0 if job.state == "succeeded" else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except grpc.RpcError as e:
        print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # one line, like the triad CLI
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
