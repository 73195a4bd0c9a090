"""customer-session: the Talon.One customer session as a typed, transactional state machine.

The public API is what ``__all__`` lists; modules whose names start with an
underscore are private.
"""

import logging

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
    EffectNotPending,
    GuardRejected,
    HookFailed,
    IllegalTransition,
    KeyAlreadyProcessed,
    Problem,
    ProtectedFieldError,
    RenderingFailed,
    RenderingUnavailable,
    SchemaNotReady,
    SessionExists,
    SessionNotEditable,
    SessionNotFound,
    SpecificationError,
    StoreError,
    StoreTimeout,
    TransitionError,
    TransitionInProgress,
    UnknownTrigger,
    UnsupportedSchema,
    ValidationError,
    WorkflowError,
)
from customer_session.hooks import Guard, Hook, Refusal, Registration, Workflow, utc_now
from customer_session.model import CustomerSession, ReopenableCustomerSession, SessionFields

# A library's loggers get no handler but this one (the logging HOWTO): what it logs
# goes where the application's logging configuration sends it, and nowhere (not to
# logging's last-resort handler on standard error) while the application has none.
logging.getLogger(__name__).addHandler(logging.NullHandler())

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
    "EffectNotPending",
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
    "RenderingFailed",
    "RenderingUnavailable",
    "ReopenableCustomerSession",
    "ReturnedItem",
    "SchemaNotReady",
    "SessionExists",
    "SessionFields",
    "SessionNotEditable",
    "SessionNotFound",
    "Specification",
    "SpecificationError",
    "State",
    "StoreError",
    "StoreTimeout",
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
