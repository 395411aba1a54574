"""Question answering: the route (stuff or retrieve), its strategies, the evidence check and the answer."""
