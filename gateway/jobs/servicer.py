"""meshserve.jobs.v1.JobsService, served by the gateway: proto in, the job desk, proto out.

Every call is audited and needs the jobs scope; a caller reaches only its own jobs and batches. A job's
request is checked as a generation would be (known model, sane parameters) before it is stored, so bad
input is refused at once rather than failing later. Errors are mapped by the interceptor.
"""

from __future__ import annotations

import uuid

import grpc
from meshserve.gateway.v1 import gateway_pb2 as gateway_pb
from meshserve.jobs.v1 import jobs_pb2 as pb
from meshserve.jobs.v1 import jobs_pb2_grpc

from gateway.audit import RequestAudit
from gateway.convert import to_gateway_request
from gateway.core.service import GatewayCore
from gateway.identity import identity_of
from gateway.jobs.convert import job_state, to_batch_status, to_job, to_result
from gateway.jobs.desk import JobDesk
from gateway.jobs.work import JobKind, JobWork
from services.shared.errors import MeshError, invalid_argument

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["JobsService"].full_name


class JobsServicer(jobs_pb2_grpc.JobsServiceServicer):
    def __init__(self, desk: JobDesk, core: GatewayCore, audit: RequestAudit) -> None:
        self._desk = desk
        self._core = core
        self._audit = audit

    async def SubmitJob(self, request: pb.SubmitJobRequest, context: grpc.aio.ServicerContext) -> pb.SubmitJobResponse:
        identity = identity_of(context, f"/{SERVICE_NAME}/SubmitJob")
        with self._audit.call(identity):
            work = self._checked(request.request, identity.subject)
            submitted = await self._desk.submit(
                identity, work, request.idempotency_key, request.completion_window_seconds
            )
            job = submitted.job
            return pb.SubmitJobResponse(
                status=job_state(job.state), task_id=job.job_id, position=submitted.position or 0
            )

    async def GetJob(self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext) -> pb.GetJobResponse:
        identity = identity_of(context, f"/{SERVICE_NAME}/GetJob")
        with self._audit.call(identity):
            job, position = await self._desk.job(identity, request.task_id)
            return pb.GetJobResponse(job=to_job(job, position))

    async def GetJobResult(
        self, request: pb.GetJobResultRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetJobResultResponse:
        identity = identity_of(context, f"/{SERVICE_NAME}/GetJobResult")
        with self._audit.call(identity):
            job, _ = await self._desk.job(identity, request.task_id)
            return pb.GetJobResultResponse(result=to_result(job))

    async def CancelJob(self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext) -> pb.CancelJobResponse:
        identity = identity_of(context, f"/{SERVICE_NAME}/CancelJob")
        with self._audit.call(identity):
            return pb.CancelJobResponse(job=to_job(await self._desk.cancel(identity, request.task_id)))

    async def SubmitBatch(
        self, request: pb.SubmitBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitBatchResponse:
        identity = identity_of(context, f"/{SERVICE_NAME}/SubmitBatch")
        with self._audit.call(identity):
            lines = []
            for index, line in enumerate(request.lines):
                generate = gateway_pb.GenerateRequest()
                generate.CopyFrom(line.request)
                if not generate.priority:
                    generate.priority = request.priority
                try:
                    work = self._checked(generate, identity.subject)
                except MeshError as error:
                    raise invalid_argument(error.reason, f"lines[{index}]: {error.message}", line=index) from None
                lines.append((line.custom_id or str(index), work))
            batch, _ = await self._desk.submit_batch(
                identity, lines, request.completion_window_seconds, request.idempotency_key
            )
            return pb.SubmitBatchResponse(batch_id=batch.batch_id, total=batch.total)

    async def GetBatch(self, request: pb.GetBatchRequest, context: grpc.aio.ServicerContext) -> pb.GetBatchResponse:
        identity = identity_of(context, f"/{SERVICE_NAME}/GetBatch")
        with self._audit.call(identity):
            return pb.GetBatchResponse(batch=to_batch_status(await self._desk.batch(identity, request.batch_id)))

    async def CancelBatch(
        self, request: pb.CancelBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelBatchResponse:
        identity = identity_of(context, f"/{SERVICE_NAME}/CancelBatch")
        with self._audit.call(identity):
            view = await self._desk.cancel_batch(identity, request.batch_id)
            return pb.CancelBatchResponse(batch=to_batch_status(view))

    async def ListJobs(self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext) -> pb.ListJobsResponse:
        identity = identity_of(context, f"/{SERVICE_NAME}/ListJobs")
        with self._audit.call(identity):
            jobs = await self._desk.jobs(identity, request.batch_id, request.limit)
            return pb.ListJobsResponse(jobs=[to_job(job) for job in jobs])

    def _checked(self, request: gateway_pb.GenerateRequest, subject: str) -> JobWork:
        # The same checks a generation gets at its start, so a stored job is one the mesh can run; the
        # model is named, so the job runs on the default of today even if the default changes.
        request.model = self._core.check(to_gateway_request(request, subject, uuid.uuid4().hex))
        return JobWork(JobKind.GENERATE, request)
