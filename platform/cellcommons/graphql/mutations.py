"""Mutations for owners: donors, collections, specifications, batches with their QC results, datasets and their
versions. Each is one transaction (committed when it succeeds, rolled back when it fails), judged by the policy
and audited in the catalogue service; expected failures are typed results (`graphql.results`).

The inputs are generated from `catalogue/schemas.py`, so GraphQL accepts exactly the shapes the catalogue
validates; the service's pydantic validation and domain rules then report every finding at once.
"""

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import date
from typing import Annotated, Any, Generic, TypeVar, Union

import strawberry
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.experimental.pydantic import input as pydantic_input

from cellcommons.catalogue import enums, models, schemas, service
from cellcommons.catalogue.service import Editor
from cellcommons.errors import CellCommonsError, Conflict, Forbidden, NotFound
from cellcommons.graphql import results
from cellcommons.graphql.results import ERRORS, Finding
from cellcommons.graphql.types import Batch, Dataset, DatasetVersion, Donor, Specification

# Enums only inputs use (the others are declared with the output types).
strawberry.enum(enums.Operator, name="SpecOperator", description="ge ≥, le ≤, lt <, gt >, eq =, in_ in")
strawberry.enum(enums.DonorMarker)
strawberry.enum(enums.DonorTestResult)
strawberry.enum(enums.Sensitivity)


@pydantic_input(model=schemas.DataUseConditionIn, all_fields=True, name="DataUseConditionInput")
class DataUseConditionInput:
    pass


@pydantic_input(model=schemas.DonorTestIn, all_fields=True, name="DonorTestInput")
class DonorTestInput:
    pass


@pydantic_input(model=schemas.DonorIn, all_fields=True, name="DonorInput")
class DonorInput:
    pass


@pydantic_input(model=schemas.CollectionIn, all_fields=True, name="CollectionInput")
class CollectionInput:
    pass


@pydantic_input(model=schemas.SpecCriterionIn, all_fields=True, name="SpecCriterionInput")
class SpecCriterionInput:
    pass


@pydantic_input(model=schemas.SpecificationIn, all_fields=True, name="SpecificationInput")
class SpecificationInput:
    pass


@pydantic_input(model=schemas.QcResultIn, all_fields=True, name="QcResultInput")
class QcResultInput:
    pass


@pydantic_input(model=schemas.BatchIn, all_fields=True, name="BatchInput")
class BatchInput:
    # GraphQL's Int is 32-bit; a lot holds billions of cells.
    total_cells: float | None = None


@pydantic_input(model=schemas.ColumnIn, all_fields=True, name="ColumnInput")
class ColumnInput:
    pass


@pydantic_input(model=schemas.DistributionIn, all_fields=True, name="DistributionInput")
class DistributionInput:
    size_bytes: float | None = None  # files pass 2 GiB


@pydantic_input(model=schemas.DatasetIn, all_fields=True, name="DatasetInput")
class DatasetInput:
    pass


# ---- payloads ---------------------------------------------------------------------------------------------

Record = TypeVar("Record")


@strawberry.type(description="A record was saved (created, or updated in place).")
class Saved(Generic[Record]):
    record: Record
    created: bool = strawberry.field(description="A new record; false when an existing one was updated")
    replayed: bool = strawberry.field(
        description="The result of an earlier request with the same idempotency key; nothing was written now"
    )
    warnings: list[Finding] = strawberry.field(description="Findings that did not block the save, kept with it")


@strawberry.type(description="A donation, identified by its ISBT 128 DIN and/or EU SEC donation part.")
class Collection:
    id: strawberry.ID
    din: str | None
    sec_donation: str | None
    tissue: str
    collected_on: date


@strawberry.type(description="A dataset's draft became its published version; that version is now immutable.")
class DatasetPublished:
    dataset: Dataset
    version: DatasetVersion


@strawberry.type(description="The record is gone; the change feed carries its tombstone.")
class RecordDeleted:
    id: strawberry.ID


def _result(success: type, name: str) -> Any:
    return Annotated[Union[(success, *ERRORS)], strawberry.union(name)]


SaveDonorResult = _result(Saved[Donor], "SaveDonorResult")
SaveCollectionResult = _result(Saved[Collection], "SaveCollectionResult")
SaveSpecificationResult = _result(Saved[Specification], "SaveSpecificationResult")
SaveBatchResult = _result(Saved[Batch], "SaveBatchResult")
SaveDatasetResult = _result(Saved[Dataset], "SaveDatasetResult")
PublishDatasetResult = _result(DatasetPublished, "PublishDatasetResult")
DeleteRecordResult = _result(RecordDeleted, "DeleteRecordResult")


# ---- running one mutation ---------------------------------------------------------------------------------

Work = Callable[[AsyncSession, Editor], Awaitable[Any]]


async def _mutate(info: strawberry.Info, operation: str, work: Work) -> Any:
    """Run `work` as its own transaction: commit the payload it returns, or roll back and answer the error."""
    context = info.context

    async def unit(session: AsyncSession) -> Any:
        try:
            editor = await service.editor(session, context.principal, context.settings.node_id)
            payload = await work(session, editor)
        except CellCommonsError as error:
            await session.rollback()
            if isinstance(error, Forbidden) and context.principal is not None:
                await service.record_refusal(session, context.principal, operation, error.message)
                await session.commit()
            return results.error_result(error)
        except IntegrityError as error:
            # A uniqueness the rules cannot see beforehand (e.g. a DIN another institution registered).
            await session.rollback()
            constraint = getattr(getattr(error.orig, "diag", None), "constraint_name", None) or "a constraint"
            return results.error_result(Conflict(f"conflicts with a record in the catalogue ({constraint})"))
        await session.commit()
        return payload

    return await context.read(unit)


def _content(schema: type, value: Any) -> Any:
    """The GraphQL input as the catalogue's pydantic input (raises ValidationFailed with every finding)."""
    return service.parse(schema, dataclasses.asdict(value))


@asynccontextmanager
async def _named(value: str, field: str) -> AsyncIterator[None]:
    """Missing and hidden records answer alike, naming the id the client sent (never the database key)."""
    try:
        yield
    except NotFound:
        raise NotFound(f"no record {value}", field=field) from None


def _warnings(row: Any) -> list[Finding]:
    return [Finding.of(f) for f in getattr(row, "findings", None) or []]


def _payload(saved: service.Saved, node: Any) -> Saved:
    return Saved(record=node, created=saved.created, replayed=saved.replayed, warnings=_warnings(saved.record))


def _submission(
    operation: str,
    schema: type,
    value: Any,
    key: str | None,
    submit: Callable[[AsyncSession, Editor, Any], Awaitable[service.Saved]],
    to_node: Callable[[Any], Any],
    **target: Any,
) -> Work:
    async def work(session: AsyncSession, editor: Editor) -> Saved:
        content = _content(schema, value)
        request = {"input": content.model_dump(mode="json"), **{k: str(v) for k, v in target.items()}}

        async def run() -> service.Saved:
            return await submit(session, editor, content, **target)

        saved = await service.submit_once(session, editor, key, operation, request, run)
        return _payload(saved, to_node(saved.record))

    return work


def _collection(info: strawberry.Info, row: models.Collection) -> Collection:
    return Collection(
        id=strawberry.ID(info.context.ids.global_id("Collection", row.id)),
        din=row.din,
        sec_donation=row.sec_donation,
        tissue=row.tissue,
        collected_on=row.collected_on,
    )


KEY_DESCRIPTION = "Any unique string (8-200 characters); a retry with the same key and input replays the result"


@strawberry.type
class CatalogueMutation:
    @strawberry.mutation(description="Create or update (by pseudonym) a donor of your institution.")
    async def save_donor(
        self,
        info: strawberry.Info,
        input: DonorInput,
        idempotency_key: Annotated[str | None, strawberry.argument(description=KEY_DESCRIPTION)] = None,
    ) -> SaveDonorResult:
        work = _submission("saveDonor", schemas.DonorIn, input, idempotency_key, service.submit_donor, Donor.of)
        return await _mutate(info, "donor.save", work)

    @strawberry.mutation(description="Create or update (by DIN or SEC donation part) a collection of a donor.")
    async def save_collection(
        self,
        info: strawberry.Info,
        input: CollectionInput,
        idempotency_key: Annotated[str | None, strawberry.argument(description=KEY_DESCRIPTION)] = None,
    ) -> SaveCollectionResult:
        work = _submission(
            "saveCollection", schemas.CollectionIn, input, idempotency_key, service.submit_collection,
            lambda row: _collection(info, row),
        )  # fmt: skip
        return await _mutate(info, "collection.save", work)

    @strawberry.mutation(
        description="Create a specification version; the same content again changes nothing, other content for an "
        "existing version is a Conflict (batches were judged against it)."
    )
    async def save_specification(
        self,
        info: strawberry.Info,
        input: SpecificationInput,
        idempotency_key: Annotated[str | None, strawberry.argument(description=KEY_DESCRIPTION)] = None,
    ) -> SaveSpecificationResult:
        work = _submission(
            "saveSpecification", schemas.SpecificationIn, input, idempotency_key, service.submit_specification,
            Specification.of,
        )  # fmt: skip
        return await _mutate(info, "specification.save", work)

    @strawberry.mutation(
        description="Create or update (by lot number) a batch of your institution with its QC results, which "
        "replace the ones stored; judged against its specification."
    )
    async def save_batch(
        self,
        info: strawberry.Info,
        input: BatchInput,
        idempotency_key: Annotated[str | None, strawberry.argument(description=KEY_DESCRIPTION)] = None,
    ) -> SaveBatchResult:
        node_id = info.context.settings.node_id
        work = _submission(
            "saveBatch", schemas.BatchIn, input, idempotency_key, service.submit_batch,
            lambda row: Batch.of(row, node_id),
        )  # fmt: skip
        return await _mutate(info, "batch.save", work)

    @strawberry.mutation(
        description="Create a dataset (without `dataset`) or give an existing one new draft content: its draft is "
        "edited, or after a publish a new draft version is made. Files are described by their metadata."
    )
    async def save_dataset(
        self,
        info: strawberry.Info,
        input: DatasetInput,
        dataset: Annotated[strawberry.ID | None, strawberry.argument(description="The dataset to edit")] = None,
        idempotency_key: Annotated[str | None, strawberry.argument(description=KEY_DESCRIPTION)] = None,
    ) -> SaveDatasetResult:
        node_id = info.context.settings.node_id

        async def work(session: AsyncSession, editor: Editor) -> Saved:
            target = {"dataset_id": info.context.ids.key_of(dataset, "Dataset", "dataset")} if dataset else {}
            inner = _submission(
                "saveDataset", schemas.DatasetIn, input, idempotency_key, service.submit_dataset,
                lambda row: Dataset.of(row, node_id), **target,
            )  # fmt: skip
            async with _named(dataset or "", "dataset"):
                return await inner(session, editor)

        return await _mutate(info, "dataset.save", work)

    @strawberry.mutation(description="Publish a dataset's draft version; from then on that version never changes.")
    async def publish_dataset(self, info: strawberry.Info, dataset: strawberry.ID) -> PublishDatasetResult:
        node_id = info.context.settings.node_id

        async def work(session: AsyncSession, editor: Editor) -> DatasetPublished:
            async with _named(dataset, "dataset"):
                version = await service.publish_dataset(
                    session, editor, info.context.ids.key_of(dataset, "Dataset", "dataset")
                )
            row = await session.get_one(models.Dataset, version.dataset_id)
            return DatasetPublished(dataset=Dataset.of(row, node_id), version=DatasetVersion.of(version))

        return await _mutate(info, "dataset.publish", work)

    @strawberry.mutation(
        description="Delete a donor, specification or batch that nothing refers to, or discard a dataset's draft "
        "version (a dataset that was never published goes with it)."
    )
    async def delete_record(self, info: strawberry.Info, id: strawberry.ID) -> DeleteRecordResult:
        async def work(session: AsyncSession, editor: Editor) -> RecordDeleted:
            type_name, key = info.context.ids.parse_global_id(id, "id")
            model = next((m for m in service.DELETABLE if m.__name__ == type_name), None)
            async with _named(id, "id"):
                if model is None:
                    raise NotFound("not deletable")
                await service.delete_record(session, editor, model, key)
            return RecordDeleted(id=id)

        return await _mutate(info, "record.delete", work)
