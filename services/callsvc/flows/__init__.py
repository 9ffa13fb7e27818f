"""Call flows: one module per feature, each an `async def` over the channel, bridge and dial
primitives (decision 010). A flow reads like the sentence a user would say: "ring the extension;
if it is busy, the caller hears the busy tone"."""
