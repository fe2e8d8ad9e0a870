"""The product's orders, as far as the example needs them: a status by order number."""

ORDERS = {1: "packed", 2: "shipped"}
