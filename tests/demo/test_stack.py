import io

import pytest

from cellcommons.demo.stack import unique_name


def test_the_embedded_s3_servers_cpu_time_grows_with_the_work_it_does(stack):
    """Benchmarks that share the cores with the embedded S3 server report its CPU time."""
    if stack.s3_server is None:
        pytest.skip("the tests use a configured S3 server, whose CPU time is not this machine's to read")
    client, bucket = stack.s3_server.client(), unique_name("cc-cpu").replace("_", "-")
    client.make_bucket(bucket)
    before = stack.s3_server.cpu_seconds()
    try:
        for index in range(4):
            client.put_object(bucket, f"object-{index}", io.BytesIO(bytes(8 * 2**20)), 8 * 2**20)
            client.remove_object(bucket, f"object-{index}")
    finally:
        client.remove_bucket(bucket)
    assert 0 < before < stack.s3_server.cpu_seconds()
