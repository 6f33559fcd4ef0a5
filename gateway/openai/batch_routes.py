"""OpenAI's Files and Batches routes, on the job desk: a batch's lines are jobs the job runner runs.

The caller is the identity the edge set (only the edge can reach the front); every file and batch is its
owner's alone, and another caller's id is answered 404, as an unknown one is.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from fastapi import FastAPI, Form, Request, UploadFile
from fastapi.responses import Response
from meshserve.gateway.v1 import gateway_pb2 as pb
from pydantic import BaseModel, Field

from gateway.jobs.desk import JobDesk
from gateway.openai.batch_lines import (
    batch_object,
    batch_of_file,
    errors_file_id,
    output_file_id,
    output_lines,
    parse_input,
    window_seconds,
)
from gateway.openai.errors import OpenAIError, bad_request, from_mesh_error
from gateway.openai.metrics import OPENAI_REQUESTS
from gateway.openai.translate import PRIORITY_HEADER, priority_of
from services.shared.errors import MeshError
from services.shared.identity import IDENTITY_HEADER, Identity, decode_identity
from services.store import Database, FileRecord, StoreUnavailable

# OpenAI's own limit on a batch input file.
MAX_UPLOAD_BYTES = 200 * 1024 * 1024


class CreateBatchRequest(BaseModel):
    input_file_id: str = Field(min_length=1)
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None


def add_batch_routes(app: FastAPI, desk: JobDesk, database: Database, served: Callable[[Request], None]) -> None:
    """The Files and Batches routes; `served` hears of every request they answer (the audit log)."""
    counted = partial(_counted, served)

    @app.post("/v1/files")
    async def upload_file(request: Request, file: UploadFile, purpose: str = Form()) -> dict[str, Any]:
        owner = _identity(request).subject
        if purpose != "batch":
            raise bad_request(f"purpose must be batch: files are kept for batches only, not {purpose!r}", "purpose")
        content = await file.read(MAX_UPLOAD_BYTES + 1)
        if len(content) > MAX_UPLOAD_BYTES:
            raise OpenAIError(413, f"a file has at most {MAX_UPLOAD_BYTES} bytes", param="file", code="file_too_large")
        record = FileRecord(f"file-{uuid.uuid4().hex}", owner, purpose, file.filename or "upload.jsonl",
                            len(content), time.time())  # fmt: skip
        await _stored(database.files.put(record, content))
        described = _file_object(record.file_id, record.bytes, record.created_at, record.filename, purpose)
        return counted(request, "files", described)

    @app.get("/v1/files/{file_id}")
    async def get_file(file_id: str, request: Request) -> dict[str, Any]:
        identity = _identity(request)
        if (produced := batch_of_file(file_id)) is not None:
            content, created = await _batch_file(desk, identity, *produced)
            name = f"{produced[0]}_{'output' if produced[1] else 'errors'}.jsonl"
            return counted(request, "files", _file_object(file_id, len(content), created, name, "batch_output"))
        record = await _stored(database.files.get(file_id, identity.subject))
        if record is None:
            raise _no_file(file_id)
        described = _file_object(file_id, record.bytes, record.created_at, record.filename, record.purpose)
        return counted(request, "files", described)

    @app.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str, request: Request) -> Response:
        identity = _identity(request)
        if (produced := batch_of_file(file_id)) is not None:
            content, _ = await _batch_file(desk, identity, *produced)
        else:
            content = await _stored(database.files.content(file_id, identity.subject))
            if content is None:
                raise _no_file(file_id)
        return counted(request, "files", Response(content, media_type="application/jsonl"))

    @app.post("/v1/batches")
    async def create_batch(body: CreateBatchRequest, request: Request) -> dict[str, Any]:
        identity = _identity(request)
        window = window_seconds(body.completion_window)
        content = await _stored(database.files.content(body.input_file_id, identity.subject))
        if content is None:
            raise _no_file(body.input_file_id, param="input_file_id")
        lines = parse_input(content, body.endpoint, _priority(request.headers.get(PRIORITY_HEADER)))
        batch, _ = await _desk(desk.submit_batch(
            identity, lines, window, endpoint=body.endpoint, input_file_id=body.input_file_id,
            metadata=json.dumps(body.metadata) if body.metadata else None,
        ))  # fmt: skip
        return counted(request, "batches", batch_object(await _desk(desk.batch(identity, batch.batch_id))))

    @app.get("/v1/batches")
    async def list_batches(request: Request, limit: int = 20, after: str = "") -> dict[str, Any]:
        if not 1 <= limit <= 100:
            raise bad_request("limit must be in [1, 100]", "limit")
        views = await _desk(desk.batches(_identity(request), limit + 1, after))
        data = [batch_object(view) for view in views[:limit]]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        page = {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": len(views) > limit}
        return counted(request, "batches", page)

    @app.get("/v1/batches/{batch_id}")
    async def get_batch(batch_id: str, request: Request) -> dict[str, Any]:
        return counted(request, "batches", batch_object(await _desk(desk.batch(_identity(request), batch_id))))

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str, request: Request) -> dict[str, Any]:
        return counted(request, "batches", batch_object(await _desk(desk.cancel_batch(_identity(request), batch_id))))


async def _batch_file(desk: JobDesk, identity: Identity, batch_id: str, is_output: bool) -> tuple[bytes, float]:
    """A batch's output or error file, written from its lines as they are now; 404 until the batch ends."""
    view = await _desk(desk.batch(identity, batch_id))
    file_id = output_file_id(batch_id) if is_output else errors_file_id(batch_id)
    if batch_object(view)["output_file_id" if is_output else "error_file_id"] != file_id:
        raise _no_file(file_id)
    lines = await _desk(desk.lines(identity, batch_id))
    return output_lines(lines, is_output), view.last_finished_at or view.batch.created_at


def _identity(request: Request) -> Identity:
    try:
        return decode_identity(request.headers.get(IDENTITY_HEADER, ""))
    except ValueError:
        # Only the edge reaches the front, and it always sets one: without it, nobody is asking.
        raise OpenAIError(401, "no credential", "authentication_error", code="invalid_api_key") from None


def _priority(header: str | None) -> int:
    # A batch is background work unless its creator asks otherwise.
    return priority_of(header) if header else pb.PRIORITY_LOW


async def _desk(call):
    try:
        return await call
    except MeshError as error:
        raise from_mesh_error(error) from None


async def _stored(call):
    try:
        return await call
    except StoreUnavailable as error:
        raise OpenAIError(503, str(error), "service_unavailable_error", code="store_unavailable",
                          retry_after_seconds=1.0) from None  # fmt: skip


def _no_file(file_id: str, param: str = "file_id") -> OpenAIError:
    return OpenAIError(404, f"No such File object: {file_id}", param=param, code="file_not_found")


def _file_object(file_id: str, size: int, created: float, filename: str, purpose: str) -> dict[str, Any]:
    return {"id": file_id, "object": "file", "bytes": size, "created_at": int(created), "filename": filename,
            "purpose": purpose, "status": "processed", "status_details": None}  # fmt: skip


def _counted(served: Callable[[Request], None], request: Request, endpoint: str, answer: Any) -> Any:
    OPENAI_REQUESTS.labels(endpoint, "200").inc()
    served(request)
    return answer
