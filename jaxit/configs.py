"""Run configs (ml_collections). `base_config()` documents every option; experiment files
under `experiments/configs/` start from it, and `demo_config()` is the offline demo."""

from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # Encoder: a local HF checkpoint directory or a hub id; "random" builds a randomly
    # initialised encoder from `random_encoder` (used by the demo and tests).
    c.model = "../shared/models/all-MiniLM-L6-v2"
    c.random_encoder = ml_collections.ConfigDict(dict(
        model_type="bert",  # bert | roberta | albert | distilbert
        hidden_size=64, num_layers=4, num_heads=4, intermediate_size=128,
        max_position_embeddings=128,
    ))
    # Keep only the first N layers of the pretrained encoder (0 = all): BERxiT's "Limit"
    # baseline (truncate to N layers, then fine-tune).
    c.truncate_layers = 0
    # Compute dtype of the encoder's matmuls and activations: float32 | bfloat16 | float16
    # (bf16: TPU/GPU speed; on CPU its speed depends on the shapes). Params and optimizer
    # state stay float32; LayerNorm, softmax, heads, losses, DACT's accumulation and
    # AdapLeR's mask arithmetic run in float32.
    c.dtype = "float32"
    # Attention kernel: auto (cuDNN's fused attention on GPU in 16-bit compute where no
    # attention dropout is needed, else xla) | xla (jaxit's own) | dot_product
    # (jax.nn.dot_product_attention, XLA implementation) | cudnn (forced; GPU only).
    c.attention = "auto"
    # Tokenizer: "" reads it from `model`; "synthetic" is the demo task's word tokenizer.
    c.tokenizer = ""
    # Task name from the registry (jaxit.data.tasks), e.g. sst2, mrpc, stsb, rte, synthetic;
    # or "custom": your own files, described by the data.*_file fields below.
    c.task = "sst2"

    c.data = ml_collections.ConfigDict()
    c.data.source = "local"  # local (GLUE-layout files) | hf (HF datasets) | tfds | synthetic
    c.data.data_dir = ""  # local/tfds: folder holding the task folders; "" = shared data dir
    c.data.hf_path = ""  # hf: dataset id or local data files ("" = the task's default id)
    c.data.train_split = "train"
    c.data.eval_split = "dev"
    c.data.max_length = 128  # tokens, [CLS]/[SEP] included; longer inputs are truncated
    c.data.buckets = (16, 32, 64, 128)  # padded lengths (capped at max_length): few shapes
    c.data.sort_chunk = 50  # sort by length within runs of this many batches (less padding)
    c.data.max_train_examples = 0  # 0 = all; else the first N after a seeded shuffle
    c.data.max_eval_examples = 0  # 0 = all
    c.data.synthetic_train = 4000  # synthetic task sizes
    c.data.synthetic_dev = 1000
    # task=custom (jaxit.data.custom): your own CSV/TSV/JSONL/parquet files, one per split.
    c.data.train_file = ""  # custom: training file (read for data.train_split "train")
    c.data.dev_file = ""  # custom: dev file (data.eval_split "dev"; the sweep's dev scores)
    c.data.test_file = ""  # custom: optional test file (split "test")
    c.data.format = ""  # custom: csv | tsv | jsonl | parquet; "" = from the file extension
    # custom: the text column(s)/key(s): "text"; a pair "question,sentence"; fields joined
    # with a space into one text "title+description"; 0-based positions ("1+2") for a
    # CSV/TSV without a header (a file is read header-less when every field is a position).
    c.data.text_fields = "text"
    c.data.label_field = "label"  # custom: the label column/key (or its 0-based position)
    # custom: class names in id order, comma-separated ("World,Sports,Business,Sci/Tech");
    # "" = inferred from train_file (sorted; numerically if integers) and saved in the run.
    # File labels may be names (case and separators ignored) or 0-/1-based integer ids.
    c.data.labels = ""
    c.data.label_base = -1  # custom: integer labels count from 0 or 1; -1 = from train_file
    c.data.regression = False  # custom: the label is a number (metrics pearson, spearman)
    c.data.label_range = ""  # custom regression: "low,high"; "" = train_file's min,max

    # Method: "finetune", or an adaptive method (see jaxit.methods.registry.method_names()).
    c.method = ml_collections.ConfigDict()
    c.method.name = "finetune"  # finetune | early_exit | berxit | deebert | pabee | elbert | fastbert | dact | adapler | depth_width
    # Early exit: joint | two_stage | alternating | pabee | elbert | fastbert; unset = the
    # method name's own (berxit: alternating, deebert: two_stage, ...).
    # depth_width (exit heads on every layer + AdapLeR's CPs, jaxit.methods.depth_width):
    # joint (unset) | alternating | pabee = AdapLeR's phase 3 with that exit loss, from a
    # fine-tuned multi-exit run; two_stage with stage1_fraction=0 = exits trained on a
    # finished AdapLeR run, everything else frozen. It reads lte, exits_lr_scale, pooling
    # and every adapler option below.
    c.method.strategy = ml_collections.config_dict.placeholder(str)
    c.method.lte = False  # add BERxiT's learning-to-exit module and loss
    # two_stage/fastbert/dact: fraction of steps in stage 1 (each stage warms up and decays
    # on its own schedule)
    c.method.stage1_fraction = 0.5
    c.method.t_init = 4.0  # elbert: initial loss-weight logits t_i
    # elbert: "shared" = one classifier for every layer (the paper); "per_layer" = a head per
    # layer, as the other strategies (an option, not ELBERT's method)
    c.method.elbert_heads = "shared"
    # Exit heads of the early-exit methods: "bert" (pooler D->D + linear, the papers') or
    # "attention" (FastBERT's classifier: D->128, 2-head self-attention over the tokens,
    # 128->128, 128->C; jaxit.heads.attention_head). Unset = "attention" for fastbert,
    # "bert" otherwise. finetune, dact, adapler and depth_width take "bert" only.
    c.method.head = ml_collections.config_dict.placeholder(str)
    c.method.weights_lr_scale = 500.0  # elbert: lr multiplier of t (1e-2 at lr 2e-5)
    c.method.distill_lr_scale = 10.0  # fastbert: lr multiplier of the distilled exits
    # lr multiplier of the intermediate exit heads (and DACT's halting units). 1 = the papers.
    # Short schedules on MiniLM need more: its [CLS] is nearly constant across inputs in
    # layers 1-4 (a sentence-transformers checkpoint, trained with mean pooling), so exits
    # there must amplify small differences; at lr 5e-5 for 500 steps they stay at chance.
    c.method.exits_lr_scale = 1.0
    c.method.tau = 5e-3  # dact: ponder penalty tau x sum_{n<L} h_n (paper grid 5e-5 ... 5e-1)
    c.method.halting_bias = 0.0  # dact: initial bias of the halting units (h = 0.5)
    # What every head reads: "cls" (the papers: the layer's [CLS] state) or "mean" (the mean
    # of the real tokens' states; for sentence-transformers checkpoints such as
    # all-MiniLM-L6-v2, whose lower-layer [CLS] barely varies across inputs).
    c.method.pooling = "cls"
    # adapler (seed 002; defaults = the authors' SST-2 setting, tables 3-4 for other tasks).
    # Phase 3 of three: start from a fine-tuned run (init_from) with its saliencies.
    c.method.saliency_dir = ""  # adapler: phase-2 output (python -m jaxit.interpret.saliency)
    c.method.gamma = 5e-3  # adapler: weight of the CP loss in the main loss (eq. 5)
    c.method.phi = 5e-4  # adapler: weight of the length loss in the speed-up loss (eq. 8)
    c.method.lambda_base = 10.0  # adapler: soft-removal slope lambda = base * growth^epoch
    c.method.lambda_growth = 10.0  # adapler: (table 4: 10^epoch, 50^epoch, 10*3^epoch)
    c.method.beta = 0.1  # adapler: leak of the kept zone of the soft removal (eq. 4)
    c.method.eta_init = 0.25  # adapler: initial eta (threshold delta = eta / kept tokens)
    c.method.theta_init = 1.0  # adapler: initial [CLS] amplification theta of the targets
    c.method.speed_lr = 5e-4  # adapler: eta/theta optimizer (AdamW, no decay, own schedule)
    c.method.speed_warmup_fraction = 0.06  # adapler: its warm-up
    c.method.speed_clip_norm = 1.0  # adapler: its gradient clipping
    # adapler: lr multiplier of the contribution predictors (1 = the paper, ~10k steps on
    # SST-2; fresh CPs barely move in a few hundred steps at lr 3e-5).
    c.method.cp_lr_scale = 1.0

    # A previous run's workdir: start from its best checkpoint's encoder and matching heads
    # (e.g. DACT stage 2 from a fine-tuned run, with method.stage1_fraction = 0). "" = off.
    c.init_from = ""
    # which of init_from's checkpoints: best | latest | a step number (e.g. the fastest
    # AdapLeR checkpoint within tolerance, rather than the one with the best dev score)
    c.init_from_checkpoint = "best"

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 32  # global batch, split over all devices
    c.train.num_epochs = 3.0
    c.train.num_steps = 0  # > 0 overrides num_epochs
    c.train.learning_rate = 2e-5
    c.train.warmup_fraction = 0.1
    c.train.weight_decay = 0.01
    c.train.adam_b1 = 0.9
    c.train.adam_b2 = 0.999
    c.train.adam_eps = 1e-8
    c.train.grad_clip_norm = 1.0  # 0 disables clipping
    c.train.seed = 0

    c.eval_every = 0  # steps between dev evaluations; 0 = once per epoch and at the end
    c.eval_batch_size = 64
    c.save_every = 500  # steps between checkpoints (also saved at every eval and at the end)
    c.keep_checkpoints = 2  # latest checkpoints kept for resuming
    c.keep_best = 1  # best checkpoints kept (AdapLeR's phase 2 averages the 3 best: set 3)
    c.best_metric = ""  # dev metric for the best checkpoint; "" = the task's primary metric
    c.log_every = 50  # steps between train-metric rows and progress-bar updates
    c.num_devices = 0  # data-parallel devices; 0 = all
    c.progress = True  # show a progress bar
    return c


def synthetic_base_config() -> ml_collections.ConfigDict:
    """`base_config` switched to a random encoder on the package's synthetic task."""
    c = base_config()
    c.model = "random"
    c.tokenizer = "synthetic"
    c.task = "synthetic"
    c.data.source = "synthetic"
    return c


def tiny_config() -> ml_collections.ConfigDict:
    """A few steps on a tiny random encoder and synthetic data: for tests."""
    c = synthetic_base_config()
    c.data.synthetic_train = 256
    c.data.synthetic_dev = 64
    c.data.max_length = 32
    c.data.buckets = (16, 32)
    c.random_encoder.hidden_size = 32
    c.random_encoder.num_layers = 2
    c.random_encoder.num_heads = 2
    c.random_encoder.intermediate_size = 64
    c.train.batch_size = 16
    c.train.num_steps = 8
    c.train.learning_rate = 1e-3
    c.eval_every = 4
    c.save_every = 4
    c.eval_batch_size = 32
    c.log_every = 2
    c.progress = False
    return c


def demo_config() -> ml_collections.ConfigDict:
    """The README's main job: a small random encoder trained from scratch on the synthetic
    task, sized to finish in about 3 minutes on 2 CPU cores (both demo methods). Texts are
    <= 11 tokens, so one 12-token bucket. The medium and hard examples need word order
    ("not" right before a word); 8 narrow heads learn that left-neighbour look-up much more
    reliably than 4 wide ones, and so do batches of 64 at lr 1.5e-3 (1500 steps over 48k
    generated examples) for both BERxiT Alternating and Joint training."""
    c = synthetic_base_config()
    c.data.synthetic_train = 48000
    # 4,000 dev examples: the batched engine's timing needs enough rows that the last,
    # partly filled batches of each layer are a small share (1,000 gave wall/FLOPs 0.72 for
    # Alternating at 4.2x, 4,000 gave 0.83; BUILD_NOTES)
    c.data.synthetic_dev = 4000
    c.data.max_length = 12
    c.data.buckets = (12,)
    c.random_encoder.hidden_size = 64
    c.random_encoder.num_layers = 6
    c.random_encoder.num_heads = 8
    c.random_encoder.intermediate_size = 128
    c.train.batch_size = 64
    c.train.num_epochs = 2.0
    c.train.learning_rate = 1.5e-3
    c.train.warmup_fraction = 0.1
    c.train.weight_decay = 0.01
    c.eval_batch_size = 250
    c.log_every = 100
    return c


def config_from_run(workdir) -> ml_collections.ConfigDict:
    """The config a run was trained with (its `hparams.json`), so that `jaxit eval/sweep` and
    benchmarks can restore it without repeating the training flags."""
    import json

    from jaxit.train.checkpoint import workdir_path

    path = workdir_path(workdir) / "hparams.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {workdir} is not a jaxit run directory "
                                "(pass --config with the training flags instead)")
    return ml_collections.ConfigDict(json.loads(path.read_text()))
