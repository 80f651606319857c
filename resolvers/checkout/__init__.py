"""Checkout resolvers: building a cart (cart.py) and completing it exactly once
(complete.py)."""

from resolvers.checkout.cart import (
    CheckoutResult,
    available_shipping_methods,
    checkout,
    checkout_create,
    checkout_customer_attach,
    checkout_email_update,
    checkout_lines_add,
    checkout_lines_delete,
    checkout_lines_update,
    checkout_promo_code_apply,
    checkout_promo_code_remove,
    checkout_shipping_address_update,
    checkout_shipping_method_update,
    shipping_methods,
    totals_of,
)
from resolvers.checkout.complete import (
    CompleteResult,
    checkout_complete,
    recover_stale,
    resume,
    settle,
)

__all__ = [
    "CheckoutResult",
    "CompleteResult",
    "available_shipping_methods",
    "checkout",
    "checkout_complete",
    "checkout_create",
    "checkout_customer_attach",
    "checkout_email_update",
    "checkout_lines_add",
    "checkout_lines_delete",
    "checkout_lines_update",
    "checkout_promo_code_apply",
    "checkout_promo_code_remove",
    "checkout_shipping_address_update",
    "checkout_shipping_method_update",
    "recover_stale",
    "resume",
    "settle",
    "shipping_methods",
    "totals_of",
]
