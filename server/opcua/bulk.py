"""AddNodes for a large address space in linear time, without stalling the event loop.

asyncua's AddNodes scans all references of the parent twice for each new node (a child
with the same property name, then the reference it is about to add) and builds a NodeId
per reference scanned: adding n children to one folder costs O(n²) — 60 s for 10 000 raw
tags on this machine, while the drivers wait. Here the same nodes, attributes and
references are made in the same order (browse results are identical, see
tests/server/test_opcua_startup.py), with the parent's property names kept in a set and
the parent → child reference appended directly: the child is new (its NodeId is checked
not to exist), so no reference to it can exist yet. Items are added in chunks with a
yield to the event loop between them.
"""

from __future__ import annotations

import asyncio
import gc
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.address_space import AttributeValue, NodeData
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from server.heap import collection_paused

if TYPE_CHECKING:
    from asyncua.server.address_space import AddressSpace, NodeManagementService
    from asyncua.server.internal_server import InternalServer

CHUNK = 2000  # nodes between yields to the event loop (about 20 ms of work)
_HAS_PROPERTY = ua.NodeId(ObjectIds.HasProperty)  # type: ignore[arg-type]
_ADMIN = User(role=UserRole.Admin)


def _result(code: int) -> ua.AddNodesResult:
    return ua.AddNodesResult(StatusCode=ua.StatusCode(code))  # type: ignore[arg-type]


# asyncua's _add_nodeattributes, in its order (UserWriteMask twice: the second wins).
_ATTRIBUTES: tuple[tuple[str, ua.VariantType | None, bool], ...] = (
    ("AccessLevel", ua.VariantType.Byte, False),
    ("ArrayDimensions", ua.VariantType.UInt32, True),
    ("BrowseName", ua.VariantType.QualifiedName, False),
    ("ContainsNoLoops", ua.VariantType.Boolean, False),
    ("DataType", ua.VariantType.NodeId, False),
    ("Description", ua.VariantType.LocalizedText, False),
    ("DisplayName", ua.VariantType.LocalizedText, False),
    ("EventNotifier", ua.VariantType.Byte, False),
    ("Executable", ua.VariantType.Boolean, False),
    ("Historizing", ua.VariantType.Boolean, False),
    ("InverseName", ua.VariantType.LocalizedText, False),
    ("IsAbstract", ua.VariantType.Boolean, False),
    ("MinimumSamplingInterval", ua.VariantType.Double, False),
    ("NodeClass", ua.VariantType.Int32, False),
    ("NodeId", ua.VariantType.NodeId, False),
    ("Symmetric", ua.VariantType.Boolean, False),
    ("UserAccessLevel", ua.VariantType.Byte, False),
    ("UserExecutable", ua.VariantType.Boolean, False),
    ("UserWriteMask", ua.VariantType.Byte, False),
    ("ValueRank", ua.VariantType.Int32, False),
    ("WriteMask", ua.VariantType.UInt32, False),
    ("UserWriteMask", ua.VariantType.UInt32, False),
    ("DataTypeDefinition", ua.VariantType.ExtensionObject, False),
    ("Value", None, False),
)
_MASKED = tuple((name, vtype, is_array, int(getattr(ua.NodeAttributesMask, name)),
                 getattr(AttributeIds, name)) for name, vtype, is_array in _ATTRIBUTES)
_SHAREABLE = (bool, int, float, ua.NodeId)  # immutable values: one Variant serves many nodes
_HAS_TYPE_DEFINITION = ua.NodeId(ObjectIds.HasTypeDefinition)  # type: ignore[arg-type]
_TYPED = (ua.NodeClass.Object, ua.NodeClass.Variable)
# Good, shared by the attributes' DataValues (asyncua never changes a StatusCode in place;
# a write replaces the DataValue).
_GOOD = ua.StatusCode()
# What a reference to a node says of it: NodeClass, BrowseName, DisplayName, TypeDefinition.
_Target = tuple[ua.NodeClass, ua.QualifiedName, ua.LocalizedText, ua.NodeId]


class _Adder:
    """asyncua's NodeManagementService._add_node without its per-reference scans.

    The attributes and references are built as asyncua builds them (same values, same
    order); the frozen Variants of equal primitive attributes and the facts about a
    parent or a type definition are made once and shared.
    """

    def __init__(self, nm: NodeManagementService, aspace: AddressSpace) -> None:
        self.nm = nm
        self.aspace = aspace
        self.property_names: dict[ua.NodeId, set[str | None]] = {}  # parent → its properties'
        self.targets: dict[ua.NodeId, _Target | None] = {}
        self.variants: dict[tuple[object, ...], ua.Variant] = {}
        self.now = datetime.now(UTC)

    def _properties(self, parent: ua.NodeId, data: NodeData) -> set[str | None]:
        names = self.property_names.get(parent)
        if names is None:
            names = self.property_names[parent] = {
                r.BrowseName.Name for r in data.references if r.ReferenceTypeId == _HAS_PROPERTY}
        return names

    def _target(self, nid: ua.NodeId, node_class: ua.NodeClass | None) -> _Target | None:
        """A reference's view of `nid`, as _add_reference_no_check reads it (None: no
        reference, the node has no NodeClass)."""
        if nid in self.targets:
            return self.targets[nid]
        read = self.aspace.read_attribute_value
        if node_class is None:  # the parent: its NodeClass attribute decides
            attr = self.aspace[nid].attributes[AttributeIds.NodeClass].value
            if attr is None or attr.Value is None:
                self.targets[nid] = None
                return None
            node_class = attr.Value.Value
        if node_class == ua.NodeClass.Unspecified:
            dv = read(nid, AttributeIds.NodeClass)
            node_class = dv.Value.Value if dv.Value is not None else ua.NodeClass.Unspecified
        bname_dv = read(nid, AttributeIds.BrowseName)
        bname = bname_dv.Value.Value if bname_dv.Value is not None else None
        dname_dv = read(nid, AttributeIds.DisplayName)
        dname = dname_dv.Value.Value if dname_dv.Value is not None else None
        typedef = ua.NodeId()
        if node_class in _TYPED:
            data = self.aspace.get(nid)
            for ref in data.references if data is not None else []:
                if ref.IsForward and ref.ReferenceTypeId == _HAS_TYPE_DEFINITION:
                    typedef = ref.NodeId
                    break
        out = (cast(ua.NodeClass, node_class), bname or ua.QualifiedName(),
               dname or ua.LocalizedText(), typedef)
        self.targets[nid] = out
        return out

    def _attributes(self, data: NodeData, item: ua.AddNodesItem) -> None:
        attrs = data.attributes
        good = _GOOD
        attrs[AttributeIds.NodeId] = AttributeValue(
            ua.DataValue(ua.Variant(data.nodeid, ua.VariantType.NodeId), good))
        attrs[AttributeIds.BrowseName] = AttributeValue(
            ua.DataValue(ua.Variant(item.BrowseName, ua.VariantType.QualifiedName), good))
        node_class = self.variants.get(("NodeClass", item.NodeClass))
        if node_class is None:
            node_class = self.variants[("NodeClass", item.NodeClass)] = ua.Variant(
                item.NodeClass, ua.VariantType.Int32)
        attrs[AttributeIds.NodeClass] = AttributeValue(ua.DataValue(node_class, good))
        given = item.NodeAttributes
        mask = given.SpecifiedAttributes
        force_server_ts = self.aspace.force_server_timestamp
        for name, vtype, is_array, bit, attr_id in _MASKED:
            if not mask & bit:
                continue
            value = getattr(given, name)
            if name == "DataTypeDefinition" and not isinstance(value, ua.DataTypeDefinition):
                variant = ua.Variant(None, ua.VariantType.Null)
            elif name != "Value" and isinstance(value, _SHAREABLE):
                key = (name, vtype, type(value), value)
                cached = self.variants.get(key)
                if cached is None:
                    cached = self.variants[key] = ua.Variant(
                        value, cast(ua.VariantType, vtype), is_array=is_array)
                variant = cached
            else:  # None for Value: the Variant given is copied
                variant = ua.Variant(value, cast(ua.VariantType, vtype), is_array=is_array)
            if name == "Value":  # asyncua stamps the initial value (add_timestamps)
                dv = ua.DataValue(variant, good, SourceTimestamp=cast(ua.DateTime, self.now),
                                  ServerTimestamp=cast(ua.DateTime, self.now)
                                  if force_server_ts else None)
            else:
                dv = ua.DataValue(variant, good)
            attrs[attr_id] = AttributeValue(dv)

    def add(self, item: ua.AddNodesItem) -> ua.AddNodesResult:
        """One node, with asyncua's checks and results (an administrator's request)."""
        nid = item.RequestedNewNodeId
        if nid.has_null_identifier() or item.ParentNodeId.is_null():
            return self.nm._add_node(item, _ADMIN)  # not ours: asyncua's own way
        if nid in self.aspace:
            return _result(StatusCodes.BadNodeIdExists)
        parent_id = item.ParentNodeId
        parent = self.aspace.get(parent_id)
        if parent is None:
            return _result(StatusCodes.BadParentNodeIdInvalid)
        names = self._properties(parent_id, parent)
        if item.BrowseName.Name in names:
            return _result(StatusCodes.BadBrowseNameDuplicated)
        typedef = item.TypeDefinition
        has_typedef = not typedef.is_null()
        if has_typedef and typedef not in self.aspace:
            return _result(StatusCodes.BadTypeDefinitionInvalid)
        data = NodeData(nid)
        self._attributes(data, item)
        self.aspace[nid] = data
        # The child is new (checked above): no reference to it can exist yet.
        parent.references.append(ua.ReferenceDescription(
            ReferenceTypeId=item.ReferenceTypeId, IsForward=True, NodeId=nid,
            BrowseName=item.BrowseName, DisplayName=item.NodeAttributes.DisplayName,
            NodeClass=item.NodeClass, TypeDefinition=typedef))
        if item.ReferenceTypeId == _HAS_PROPERTY:
            names.add(item.BrowseName.Name)
        up = self._target(parent_id, None)
        if up is not None:
            data.references.append(ua.ReferenceDescription(
                ReferenceTypeId=item.ReferenceTypeId, IsForward=False, NodeId=parent_id,
                NodeClass=up[0], BrowseName=up[1], DisplayName=up[2], TypeDefinition=up[3]))
        if has_typedef:
            kind = self._target(typedef, ua.NodeClass.Unspecified)
            assert kind is not None
            data.references.append(ua.ReferenceDescription(
                ReferenceTypeId=_HAS_TYPE_DEFINITION, IsForward=True, NodeId=typedef,
                NodeClass=kind[0], BrowseName=kind[1], DisplayName=kind[2],
                TypeDefinition=kind[3]))
        return ua.AddNodesResult(StatusCode=ua.StatusCode(), AddedNodeId=nid)


async def add_nodes_bulk(iserver: InternalServer, items: list[ua.AddNodesItem], *,
                         chunk: int = CHUNK) -> list[ua.AddNodesResult]:
    """AddNodes of `items` (parents first), as asyncua's add_nodes would answer them."""
    adder = _Adder(iserver.node_mgt_service, iserver.aspace)
    results: list[ua.AddNodesResult] = []
    # The cyclic collector would walk the whole address space (the standard nodes and every
    # node added so far) again and again while millions of small objects are made: most of
    # the time, and quadratic. None of them is garbage, and they live as long as the server
    # (server/heap.py; freeze_heap puts them out of every later collection at start).
    with collection_paused():
        for i in range(0, len(items), chunk):
            adder.now = datetime.now(UTC)  # the initial values' timestamps (asyncua's "now")
            results += [adder.add(item) for item in items[i:i + chunk]]
            if i + chunk < len(items):
                await asyncio.sleep(0)  # let the drivers and the loop run between chunks
    gc.freeze()  # out of the collections until the runtime's freeze_heap (thawed at stop)
    return results


async def write_initial(iserver: InternalServer, initial: list[tuple[ua.NodeId, ua.Variant]],
                        status: ua.StatusCode, stamp: ua.DateTime, *,
                        chunk: int = 5 * CHUNK) -> None:
    """Write each variable's initial value with `status` and server timestamp `stamp`,
    yielding to the event loop between chunks."""
    for i in range(0, len(initial), chunk):
        for nid, value in initial[i:i + chunk]:
            await iserver.write_attribute_value(
                nid, ua.DataValue(value, status, ServerTimestamp=stamp))
        await asyncio.sleep(0)  # an awaited write does not yield: give the loop its turn
