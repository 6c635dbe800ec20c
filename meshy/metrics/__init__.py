"""Reading metrics the way either backend serves them."""
