"""HTTP routes for /v1/files: upload, list, retrieve, download content, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from api.deps import DataLimitsDep, SessionDep, SettingsDep, StoreDep, TenantDep
from api.ranges import DOWNLOAD_RESPONSES, file_download
from api.routing import SessionReleasingRoute
from api.uploads import check_declared_size, receive_upload
from models.services import files, quotas
from models.services.quotas import UploadCap
from models.wire.common import MAX_LIST_LIMIT, ErrorResponse, ListPage, UserText
from models.wire.files import FileDeleted, FileRead

router = APIRouter(prefix="/v1/files", tags=["files"], route_class=SessionReleasingRoute)

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": ["fine-tune"]},
                    },
                }
            }
        },
    }
}


def refuse_oversized_upload(request: Request, settings: SettingsDep) -> None:
    """Runs before authentication, so an oversized body is refused before anything else is done."""
    check_declared_size(request, quotas.service_upload_cap(settings))


def get_upload_cap(request: Request, tenant_id: TenantDep, session: SessionDep, settings: SettingsDep) -> UploadCap:
    """After authentication: the tenant's cap, its upload limit or the room left in its storage quota."""
    cap = quotas.upload_cap(session, tenant_id, quotas.quotas_of(session, tenant_id, settings))
    session.commit()  # end the read transaction before the body streams; SQLite holds its lock until then
    check_declared_size(request, cap)
    return cap


@router.post(
    "",
    dependencies=[Depends(refuse_oversized_upload)],
    openapi_extra=_UPLOAD_BODY,
    responses={
        413: {
            "model": ErrorResponse,
            "description": "Larger than the tenant's upload limit (`param`: file) "
            "or than the room left in its storage quota (`param`: max_stored_bytes)",
        }
    },
)
async def upload_file(
    request: Request,
    tenant_id: TenantDep,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    cap: Annotated[UploadCap, Depends(get_upload_cap)],
    limits: DataLimitsDep,
) -> FileRead:
    upload = await receive_upload(request, store, cap)

    def _register() -> FileRead:
        try:
            filename = files.clean_filename(upload.filename)
            purpose = files.parse_purpose(upload.fields.get("purpose"))
            row = files.create_file(
                session,
                store,
                tenant_id=tenant_id,
                filename=filename,
                purpose=purpose,
                uploaded_path=upload.temporary_path,
                size_bytes=upload.size_bytes,
                sha256=upload.sha256,
                quotas=quotas.quotas_of(session, tenant_id, settings),
                limits=limits,
            )
        finally:
            upload.temporary_path.unlink(missing_ok=True)
        # Built before the commit: once the file exists, nothing may fail on the way to the client.
        created = FileRead.from_row(row)
        session.commit()
        return created

    return await run_in_threadpool(_register)


@router.get("")
def list_files(
    tenant_id: TenantDep,
    session: SessionDep,
    after: UserText | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 20,
    purpose: UserText | None = None,
) -> ListPage[FileRead]:
    rows, has_more = files.list_files(session, tenant_id, after=after, limit=limit, purpose=purpose)
    data = [FileRead.from_row(row) for row in rows]
    return ListPage[FileRead].of(data, has_more)


@router.get("/{file_id}")
def retrieve_file(file_id: str, tenant_id: TenantDep, session: SessionDep) -> FileRead:
    return FileRead.from_row(files.get_file(session, tenant_id, file_id))


@router.get("/{file_id}/content", response_class=FileResponse, responses=DOWNLOAD_RESPONSES)
def download_file_content(
    request: Request, file_id: str, tenant_id: TenantDep, session: SessionDep, store: StoreDep
) -> FileResponse:
    row = files.get_file(session, tenant_id, file_id)
    session.close()
    return file_download(
        request,
        store.path(row.blob_key),
        media_type="application/octet-stream",
        filename=row.filename,
        headers={"etag": f'"{row.sha256}"'},
    )


@router.delete("/{file_id}", responses={409: {"model": ErrorResponse, "description": "An unfinished job uses it"}})
def delete_file(file_id: str, tenant_id: TenantDep, session: SessionDep, store: StoreDep) -> FileDeleted:
    row = files.delete_file(session, tenant_id, file_id)
    deleted, blob_key = FileDeleted(id=row.id, deleted=True), row.blob_key  # before the commit expires the row
    session.commit()
    store.delete(blob_key)
    return deleted
