"""customer-session: the Talon.One customer session as a typed, transactional state machine.

The public API is what ``__all__`` lists; modules whose names start with an
underscore are private.
"""

from customer_session._cart import (
    AdditionalCost,
    CartItem,
    JSONValue,
    PriceDetail,
    Product,
    ReturnedItem,
)
from customer_session._phase import Phase
from customer_session._records import TransitionEvent, TransitionRecord
from customer_session._spec import (
    CUSTOMER_SESSION,
    REOPENABLE_SESSION,
    Edge,
    Specification,
    State,
    Trigger,
)
from customer_session.exceptions import (
    AfterCommitHookFailed,
    ConcurrentUpdate,
    CorruptData,
    CustomerSessionError,
    GuardRejected,
    HookFailed,
    IllegalTransition,
    KeyAlreadyProcessed,
    Problem,
    ProtectedFieldError,
    RenderingUnavailable,
    SessionExists,
    SessionNotEditable,
    SessionNotFound,
    SpecificationError,
    StoreError,
    TransitionError,
    TransitionInProgress,
    UnknownTrigger,
    UnsupportedSchema,
    ValidationError,
    WorkflowError,
)
from customer_session.hooks import Guard, Hook, Refusal, Registration, Workflow, utc_now
from customer_session.model import CustomerSession, ReopenableCustomerSession

__all__ = [
    "CUSTOMER_SESSION",
    "REOPENABLE_SESSION",
    "AdditionalCost",
    "AfterCommitHookFailed",
    "CartItem",
    "ConcurrentUpdate",
    "CorruptData",
    "CustomerSession",
    "CustomerSessionError",
    "Edge",
    "Guard",
    "GuardRejected",
    "Hook",
    "HookFailed",
    "IllegalTransition",
    "JSONValue",
    "KeyAlreadyProcessed",
    "Phase",
    "PriceDetail",
    "Problem",
    "Product",
    "ProtectedFieldError",
    "Refusal",
    "Registration",
    "RenderingUnavailable",
    "ReopenableCustomerSession",
    "ReturnedItem",
    "SessionExists",
    "SessionNotEditable",
    "SessionNotFound",
    "Specification",
    "SpecificationError",
    "State",
    "StoreError",
    "TransitionError",
    "TransitionEvent",
    "TransitionInProgress",
    "TransitionRecord",
    "Trigger",
    "UnknownTrigger",
    "UnsupportedSchema",
    "ValidationError",
    "Workflow",
    "WorkflowError",
    "utc_now",
]
