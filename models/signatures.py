"""Names of the exported model's signatures and their inputs: the serving contract.

The Trainer exports, clients call, and the benchmarks time these; nothing else spells them.

Two ranking signatures score the same model:

* ``serving_default`` (input ``examples``: ``[N]`` serialized tf.Examples, each carrying every
  serving feature): one full example per candidate. TFMA, the quality report and batch scoring
  use it.
* ``rank_with_context`` (inputs ``context``: ``[1]`` serialized tf.Example with the user-side
  features, and ``examples``: ``[N]`` serialized tf.Examples with only the room-side features,
  :data:`models.features.HOST_SIDE_FEATURES`): one user, N candidate rooms. The user's sequences
  travel, are parsed, checked and transformed once per request, then broadcast to the N rooms.

* ``rank`` (the same inputs as ``rank_with_context``; models that serve a swipe-down head):
  STCRank's MSC look-ahead re-ranks the N rooms in the graph and returns the slate (candidate
  indices, first slot first) with per-slot reward, P(swipe down) and P(seen)
  (:mod:`models.msc`), so one Predict returns the ordered slate.

The context signatures follow TF Ranking's ``ExampleListWithContext`` (ELWC,
``tensorflow_serving/apis/input.proto``): ``ELWC.context`` is the ``context`` input and
``ELWC.examples`` (in order) the ``examples`` input; output ``i`` scores ``ELWC.examples[i]``.
TF Serving's Predict API takes tensors, not an ELWC, so a client sends the two fields as two
string tensors (``serving.client.context_request`` does the mapping).
"""

SERVING_SIGNATURE = "serving_default"
CONTEXT_SIGNATURE = "rank_with_context"
RANK_SIGNATURE = "rank"
TRANSFORM_SIGNATURE = "transform_features"
# The signatures live traffic calls (one user, N rooms). A new version warms up these before it
# serves (models.warmup); serving_default and transform_features (TFMA, batch scoring) are left
# to their first call, which on a busy 2-core machine would otherwise triple a version change.
ONLINE_SIGNATURES = (CONTEXT_SIGNATURE, RANK_SIGNATURE)

EXAMPLES_INPUT = "examples"  # per-candidate tf.Examples (both ranking signatures)
CONTEXT_INPUT = "context"  # the user-side tf.Example (the context signature)
