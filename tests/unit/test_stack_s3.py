"""The stack's local S3 (moto + its request log) keeps every object across restarts, including
objects stored by multipart upload (what MLflow's server does for a file over 8 MB): the stock
recorder interleaved the concurrent parts' lines and could not replay upload ids, so a restart
left the store empty."""

from __future__ import annotations

import hashlib
import os

import boto3
from stack_support import stack_folder, write_stack_config

from synthloop.stack.procs import PidFile, stop
from synthloop.stack.services import LOCAL_S3_KEYS, _start_s3, service_env
from synthloop.stack.settings import load_stack


def test_objects_multipart_ones_included_survive_two_restarts():
    with stack_folder() as folder:
        st = load_stack(write_stack_config(folder))
        for d in (st.data_dir, st.logs_dir, st.run_dir):
            d.mkdir(parents=True, exist_ok=True)
        pid = PidFile(st.run_dir, "s3")
        s3 = boto3.client("s3", endpoint_url=st.s3_endpoint, region_name="us-east-1",
                          aws_access_key_id=LOCAL_S3_KEYS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=LOCAL_S3_KEYS["AWS_SECRET_ACCESS_KEY"])
        big = folder / "checkpoint.pt"
        big.write_bytes(os.urandom(20 * 2**20))  # > 8 MB: boto3 sends 3 parts at once
        try:
            _start_s3(st, service_env(st))
            s3.create_bucket(Bucket="mlflow")
            s3.upload_file(str(big), "mlflow", "models/m-1/artifacts/checkpoint.pt")
            s3.put_object(Bucket="mlflow", Key="note.txt", Body=b"kept")
            s3.put_object(Bucket="mlflow", Key="gone.txt", Body=b"deleted")
            s3.delete_object(Bucket="mlflow", Key="gone.txt")
            s3.get_object(Bucket="mlflow", Key="note.txt")["Body"].read()  # not logged
            for _ in range(2):
                assert stop(pid)
                _start_s3(st, service_env(st))
                keys = {o["Key"]: o["Size"] for o in
                        s3.list_objects_v2(Bucket="mlflow").get("Contents", [])}
                assert keys == {"models/m-1/artifacts/checkpoint.pt": big.stat().st_size,
                                "note.txt": 4}
                body = s3.get_object(Bucket="mlflow",
                                     Key="models/m-1/artifacts/checkpoint.pt")["Body"].read()
                assert hashlib.sha256(body).digest() == hashlib.sha256(big.read_bytes()).digest()
            log = (st.logs_dir / "s3.log").read_text()
            assert "replayed" in log and "skipped" not in log
            assert not (st.s3_dir / "requests.replaying.jsonl").exists()
        finally:
            stop(pid)
