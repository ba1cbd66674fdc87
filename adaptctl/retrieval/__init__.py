"""Knowledge-base question answering (docs/kbqa.md): `data.retrieval` retrieves passages of a corpus for
every question, and the prompt reads them as {{ passages }}.

- corpus.py    the corpus read into passages (id, text), duplicates merged
- embedder.py  the sentence embedder, resolved offline like model.base, and its content hash
- index.py     the passages embedded in resumable chunks into an index folder (exact or FAISS HNSW), searched
- lexical.py   data.retrieval.hybrid: a BM25 ranking (bm25s) fused with the dense one by reciprocal rank
- rows.py      what prepare adds to each question row: its passages (RAFT's mix for training rows) and the
               carried columns evaluate scores retrieval with
- quality.py   recall@k and MRR against the gold passage
- shipped.py   predict's (and serve's) retrieval from an exported folder or a run directory

Nothing heavy is imported here: the recipe reads PASSAGES.
"""

from __future__ import annotations

# PASSAGES (re-exported): the column data.prompt reads
from adaptctl.data.columns import PASSAGES as PASSAGES
from adaptctl.data.columns import RETRIEVAL_PREFIX

SHOWN = RETRIEVAL_PREFIX + "shown"     # the ids of the passages the prompt shows, in its order
RANKED = RETRIEVAL_PREFIX + "ranked"   # the ids the index ranked first for the question (retrieval's answer)
GOLD = RETRIEVAL_PREFIX + "gold"       # the id of the passage that answers it ('' where the data names none)
QUERY = RETRIEVAL_PREFIX + "query"     # the text searched for
CLOSED_BOOK = RETRIEVAL_PREFIX + "closed_book"   # the prompt without passages (the closed-book baseline)
ROW = RETRIEVAL_PREFIX + "row"         # the row's place in its file (to swap in RAFT's training rows)
FOLDER = "retrieval"                   # under prepare/ and under an exported model folder
PASSAGE_IDS = "passage_ids"            # predict's output field: the passages an answer was given, by id
