"""open_clip's own trainer (`open_clip_train.main`), unchanged but for one compatibility fix; used by bench/run.py.

    python bench/open_clip_trainer.py --model local-dir:<folder> --train-data '<shards>' ...   # open_clip's flags

open_clip_train 3.3 groups tar members with its own `group_by_keys_nothrow`, which does not know the end-of-shard
marker (`{}`) that webdataset >= 0.2.96 yields between shards by default, and fails with KeyError 'fname' at the
first shard boundary. The fix its maintainers point to (webdataset issue #384, open_clip issue #935) is to call
`tar_file_expander(..., eof_value=None)`, which restores the old stream; that is all this wrapper changes.
DataLoader workers are forked, so they inherit the patched module.
"""

from __future__ import annotations

import functools
import sys

import open_clip_train.data
from open_clip_train.main import main
from webdataset.tariterators import tar_file_expander

open_clip_train.data.tar_file_expander = functools.partial(tar_file_expander, eof_value=None)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
