from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from serve.schemas import CollectionPath
from serve.deps import AdminKey, ServiceDep
from serve.customer import check_rules
from serve.schemas import CollectionCreate, CollectionOut, CustomerRules, ErrorResponse

router = APIRouter(prefix="/v1/collections", tags=["collections"])


def _out(collection) -> CollectionOut:
    stats = collection.stats()
    return CollectionOut(collection=stats["collection"], documents=stats["documents"], chunks=stats["chunks"],
                         generation=stats["generation"], index=stats["index"], encoder=stats["encoder"],
                         hybrid_dense_weight=stats["hybrid_dense_weight"], languages=stats["languages"],
                         question_languages=stats["question_languages"])


@router.get("", response_model=list[CollectionOut])
async def list_collections(service: ServiceDep, key: AdminKey) -> list[CollectionOut]:
    names = [n for n in service.collection_names() if key.can_see(n)]
    return await run_in_threadpool(lambda: [_out(service.collection(n)) for n in names])


@router.post("", status_code=201, response_model=CollectionOut, responses={409: {"model": ErrorResponse}})
async def create_collection(body: CollectionCreate, service: ServiceDep, key: AdminKey) -> CollectionOut:
    key.check_collection(body.name)
    key.check_unsliced("creating collections")
    return _out(await run_in_threadpool(service.create_collection, body.name, body.encoder))


@router.delete("/{name}", status_code=204, responses={404: {"model": ErrorResponse}})
async def delete_collection(name: CollectionPath, service: ServiceDep, key: AdminKey) -> Response:
    key.check_collection(name)
    key.check_unsliced("deleting collections")
    await run_in_threadpool(service.delete_collection, name)
    return Response(status_code=204)


@router.get("/{name}/customer-rules", response_model=CustomerRules, responses={404: {"model": ErrorResponse}})
async def get_customer_rules(name: CollectionPath, service: ServiceDep, key: AdminKey) -> CustomerRules:
    key.check_collection(name)
    return CustomerRules(rules=await run_in_threadpool(lambda: service.collection(name).customer_rules))


@router.put("/{name}/customer-rules", response_model=CustomerRules, responses={404: {"model": ErrorResponse},
                                                                              422: {"model": ErrorResponse}})
async def put_customer_rules(name: CollectionPath, body: CustomerRules, service: ServiceDep,
                             key: AdminKey) -> CustomerRules:
    """Replace how a customer's context scopes this collection (serve/customer.py); {} turns it off."""
    key.check_collection(name)
    key.check_unsliced("changing customer rules")
    rules = check_rules(body.rules)   # RulesError: 422 naming the rule
    await run_in_threadpool(lambda: service.collection(name).set_customer_rules(rules))
    return CustomerRules(rules=rules)
