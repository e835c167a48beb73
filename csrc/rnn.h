/* rnn.h: the C API of rnnkit's tanh-RNN language-model kernel.
 *
 * Dimension legend: T = steps, B = batch, H = hidden, V = vocab, N = T*B positions,
 * C = classes (0: full softmax), M = the largest class, K = RNN_DIRECT_HISTORY,
 * D = direct table entries, P = rnn_num_params(V, H, C).
 *
 * Size limits (RNN_E_SIZE otherwise), so that no size computation can overflow:
 * each of T, B, H, V in [1, RNN_MAX_DIM = 2^30]; N < 2^31 (BLAS dimensions are int);
 * V*H, H*H and N*H at most 2^40; the optimizers' n in [0, 2^42] (P < 2^42 always);
 * C in [1, V] for the class functions; D in [1, 2^40].
 *
 * Model (row vectors, one row per batch element):
 *   h_t = act(W_xh[x_t] + h_{t-1} W_hh^T + b_h)      (h_{t-1} = 0 where reset[t] = 1)
 *   y_t = h_t W_hy^T + b_y,   P(w | ...) = softmax(y_t)[w]
 * Parameters are one flat float32 buffer in this order:
 *   W_xh (V, H)  W_hh (H, H)  b_h (H)  W_hy (V, H)  b_y (V)
 * Gradients use a second buffer of the same layout. Backward ACCUMULATES (+=) into
 * the gradient buffers: the caller zeroes them between steps.
 *
 * Every function returns RNN_OK (0) or an rnn_status code; rnn_strerror() names it.
 * The kernel never allocates, prints, exits or aborts. All buffers are caller-owned,
 * C-contiguous; scratch space is passed as `work` of rnn_workspace_size() floats.
 *
 * This header holds only typedefs, enums and prototypes, so that rnnkit/_build_ffi.py
 * can pass it to cffi's cdef() after dropping the preprocessor lines.
 */
#ifndef RNNKIT_RNN_H
#define RNNKIT_RNN_H

#include <stddef.h>
#include <stdint.h>

enum rnn_abi { RNN_ABI_VERSION = 9 };

enum rnn_limits {
    RNN_MAX_DIM = 1073741824,       /* 2^30: largest T, B, H, V or C */
    RNN_MAX_DIRECT_ORDER = 10,      /* largest n of the direct connections' n-gram features */
    RNN_DIRECT_HISTORY = 8          /* inputs before step 0 a row can carry: n - 2 at most */
};

enum rnn_status {
    RNN_OK = 0,
    RNN_E_SIZE = 1,         /* a size is < 1 or beyond the limits above */
    RNN_E_TOKEN = 2,        /* an input token id is outside [0, V) */
    RNN_E_TARGET = 3,       /* a target id is outside [-1, V) */
    RNN_E_RESET = 4,        /* a reset flag is not 0 or 1 */
    RNN_E_ACTIVATION = 5,   /* unknown activation code */
    RNN_E_WORKSPACE = 6,    /* the work buffer is smaller than rnn_workspace_size() */
    RNN_E_NULL = 7,         /* a required pointer is NULL */
    RNN_E_ALIAS = 8,        /* an output buffer aliases an input buffer */
    RNN_E_ARGUMENT = 9,     /* a scalar argument is out of range (lr, betas, norm, ...) */
    RNN_E_NONFINITE = 10,   /* a non-finite value where a finite one is required */
    RNN_E_CLASS = 11,       /* class_start does not rise strictly from 0 to V */
    RNN_E_HISTORY = 12,     /* a direct history id is outside [-1, V) */
    RNN_E_INDEX = 13        /* a sparse index does not rise strictly within its array */
};

enum rnn_activation {
    RNN_ACT_TANH = 0,       /* language models */
    RNN_ACT_LOGISTIC = 1,   /* the lecture's hand-set threshold units */
    RNN_ACT_IDENTITY = 2    /* the lecture's running-sum network */
};

int rnn_abi_version(void);
const char *rnn_strerror(int status);

/* Number of floats in the flat parameter buffer: 2*V*H + H*H + H + V, plus C*H + C for
 * the class layer when C > 0 (see the class functions); -1 when V or H is outside the
 * size limits or C outside [0, V]. */
int64_t rnn_num_params(int V, int H, int C);

/* Floats of scratch space rnn_forward / rnn_backward need for these sizes; -1 when a
 * size is outside the limits. */
int64_t rnn_workspace_size(int T, int B, int H, int V);

/* Threads of every parallel loop and large matrix product of the kernel. The kernel
 * runs its own threads: from its first call on it sets the process's OpenBLAS (the
 * library it links) to one thread (see rnn.c). Until set, the count is OpenBLAS's
 * default (OPENBLAS_NUM_THREADS or the CPU count). */
int rnn_set_num_threads(int n);
int rnn_get_num_threads(void);

/* Forward over a T x B batch.
 * loss:     (1,) summed cross-entropy (natural log) over positions with target >= 0
 * logprobs: (T, B) natural-log probability of each target; 0 where target = -1
 * hs:       (T, B, H) hidden states h_1..h_T, saved for backward
 * hd:       (T, B, H) or NULL; required with out_mask: receives hs * out_mask, the
 *           output layer's input, saved for backward
 * dlogits:  (T, B, V) or NULL. When given, receives softmax - onehot(target) for
 *           rnn_backward (rows with target = -1 are zero). When NULL, the output
 *           layer is computed in chunks in `work` and nothing V-sized is kept.
 * work:     (work_size,) scratch
 * inputs:   (T, B) token ids in [0, V)
 * targets:  (T, B) token ids in [0, V), or -1 = ignored
 * resets:   (T, B) 1 where a sequence starts (h_{t-1} taken as zero), else 0
 * in_mask:  (T, B, H) or NULL: dropout on the input rows, W_xh[x_t] * in_mask[t]
 * out_mask: (T, B, H) or NULL: dropout before the output layer, y_t = (h_t * out_mask[t]) W_hy^T
 *           (masks hold 0 or 1/(1-p): inverted dropout; the recurrence never sees out_mask)
 * h0:       (B, H) state before step 0
 * params:   (P,) */
int rnn_forward(float *loss, float *logprobs, float *hs, float *hd, float *dlogits,
                float *work, int64_t work_size,
                const int32_t *inputs, const int32_t *targets, const int32_t *resets,
                const float *in_mask, const float *out_mask,
                const float *h0, const float *params,
                int activation, int T, int B, int H, int V);

/* Backward (BPTT over the T steps) of loss_scale * (summed loss of rnn_forward).
 * grads:    (P,) accumulated (+=)
 * dh0:      (B, H) gradient with respect to h0, accumulated (+=)
 * work:     (work_size,) scratch
 * dlogits:  (T, B, V) as written by rnn_forward (not modified)
 * hs, hd, inputs, resets, in_mask, out_mask, h0, params: exactly as passed to /
 *           written by rnn_forward (hd may be NULL when out_mask is) */
int rnn_backward(float *grads, float *dh0, float *work, int64_t work_size,
                 const float *dlogits, const float *hs, const float *hd,
                 const int32_t *inputs, const int32_t *resets,
                 const float *in_mask, const float *out_mask,
                 const float *h0, const float *params, float loss_scale,
                 int activation, int T, int B, int H, int V);

/* One inference step for B rows (sampling, incremental scoring).
 * h_out:    (B, H) new state; must not alias h_in
 * logprobs: (B, V) natural-log next-token distribution after h_out
 * tokens:   (B,) token ids in [0, V)
 * h_in:     (B, H) previous state (zeros for a fresh sequence) */
int rnn_step(float *h_out, float *logprobs, const int32_t *tokens, const float *h_in,
             const float *params, int activation, int B, int H, int V);

/* ------------------------------------------------------------------------------------
 * Class-factored output and direct connections (RNNME, as in Mikolov's RNNLM)
 *
 * Classes: C classes cut the vocabulary into contiguous ranges of word ids, class c
 * holding words [class_start[c], class_start[c+1]); class_start (C+1,) int32 rises
 * strictly from 0 to V (no class is empty), C in [1, V]; M = the largest class size.
 *   P(w | h_t) = P(c | h_t) P(w | c, h_t)  with c the class of w, where
 *   P(c | h_t)    = softmax over classes of  hy_t W_c^T + b_c + direct(class units)
 *   P(w | c, h_t) = softmax over the words of c of  hy_t W_hy[w]^T + b_y[w] + direct(word units)
 * (hy_t = h_t, or h_t * out_mask[t] with output dropout.) Training and scoring cost
 * (C + |c|) H per position instead of V H. The parameters are the layout above followed
 * by W_c (C, H) and b_c (C).
 *
 * Direct connections (maximum-entropy n-gram features): with direct_order n in
 * [1, RNN_MAX_DIRECT_ORDER], position t has the features k = 0 .. n-1 whose k inputs are
 * in its history; feature k hashes the last k inputs x_t, x_{t-1}, ... (k = 0: none, a
 * bias). The history runs back from x_t to the latest reset; at step 0 without a reset it
 * continues into `history`. For a feature with hash f (see rnn.c) and output unit o
 * (class c: o = c; word w: o = C + w) the logit gains table[(f + o) mod D], so a feature's
 * entries for a class's words are one contiguous run of the table. direct_order = 0: no
 * direct connections (table may then be NULL and table_size is not read).
 *
 * history:  (B, K) int32 or NULL: the inputs before step 0, oldest first (history[b][K-1]
 *           came just before inputs[0][b]); -1 = none, and a -1 ends the history (entries
 *           left of it are not read). NULL: nothing before step 0.
 * table:    (D,) float32 direct-connection weights, D = table_size
 * ---------------------------------------------------------------------------------- */

/* Floats of scratch space rnn_class_forward / rnn_class_backward need; -1 when a size is
 * outside the limits (C and M in [1, V]). */
int64_t rnn_class_workspace_size(int T, int B, int H, int V, int C, int M);

/* Forward over a T x B batch with the class-factored output. As rnn_forward, except:
 * logprobs: (T, B) log P(c | h) + log P(w | c, h) of each target; 0 where target = -1
 * dclass:   (T, B, C) or NULL. When given (with dword), receives softmax - onehot(class of
 *           the target) over the classes (rows with target = -1 are zero), for backward.
 * dword:    (N, M) or NULL, with dclass. Row k belongs to the k-th position with a target
 *           >= 0 when those are ordered by the target's class, then by position t*B + b;
 *           its first |c| entries receive softmax - onehot(target) over the target's class
 *           (the rest are unspecified). When both are NULL, the output layer is computed in
 *           chunks in `work`.
 * class_start, history, table, table_size, direct_order: see above. */
int rnn_class_forward(float *loss, float *logprobs, float *hs, float *hd,
                      float *dclass, float *dword, float *work, int64_t work_size,
                      const int32_t *inputs, const int32_t *targets, const int32_t *resets,
                      const int32_t *history, const float *in_mask, const float *out_mask,
                      const float *h0, const float *params, const int32_t *class_start,
                      const float *table, int64_t table_size, int direct_order,
                      int activation, int T, int B, int H, int V, int C);

/* Backward of loss_scale * (summed loss of rnn_class_forward): accumulates (+=) into grads
 * (only the class rows of W_c, b_c and the target classes' rows of W_hy, b_y get output-
 * layer terms) and dh0. The direct table is updated in place, not differentiated into a
 * buffer: for each position with a target (in dword's row order), first its class units,
 * then its class's word units, each feature f by feature and unit o by unit, with
 * i = (f + o) mod D, w = table[i] and g the unit's dclass / dword entry,
 *   direct_accum NULL (SGD):  table[i] = w - direct_lr * (loss_scale * g + direct_l2 * w)
 *   direct_accum given (AdaGrad, Duchi, Hazan & Singer 2011):
 *     u = loss_scale * g + direct_l2 * w;  direct_accum[i] += u * u;
 *     table[i] = w - direct_lr * u / sqrt(direct_accum[i] + 1e-8)
 * on the entries used, once per use (the others are untouched, as in RNNLM), in that fixed
 * order, so training is reproducible bit for bit. direct_accum: (D,) float32 sums of
 * squares, >= 0 (not checked: a pass over the table per call), not aliasing table, grads
 * or params; for a fresh table zeros, or a prior (rnnkit/train.py starts at 1). From
 * zeros AdaGrad's first step on an entry is direct_lr whatever the size of u; an entry's
 * steps shrink as its squares add up, so rare features keep moving and frequent ones
 * settle. The 1e-8 keeps 0 / 0 out (while an entry's u and squares are 0 its step is 0);
 * beside squares of u from 1e-6 on it is nothing. direct_lr = 0 leaves the table and
 * direct_accum unchanged. Why not a gradient buffer: the entries used per step are
 * N * n * (C + |c|) (a million at C = 100, n = 4), the table is not read by the rest of
 * backward, and the update needs no second pass (processes that must sum their updates
 * first use rnn_class_direct_gradient).
 * dclass, dword, hs, hd, inputs, targets, resets, history, in_mask, out_mask, h0, params,
 * class_start, table_size, direct_order: exactly as passed to / written by the forward. */
int rnn_class_backward(float *grads, float *dh0, float *table, float *direct_accum,
                       float *work, int64_t work_size,
                       const float *dclass, const float *dword, const float *hs, const float *hd,
                       const int32_t *inputs, const int32_t *targets, const int32_t *resets,
                       const int32_t *history, const float *in_mask, const float *out_mask,
                       const float *h0, const float *params, const int32_t *class_start,
                       int64_t table_size, int direct_order, float loss_scale,
                       float direct_lr, float direct_l2,
                       int activation, int T, int B, int H, int V, int C);

/* The direct table's part of rnn_class_backward as a gradient instead of an update, for
 * data-parallel training (rnnkit/mpi.py), where every process must take the same summed
 * step: for each use of an entry, in rnn_class_backward's order,
 *   dtable[(f + o) mod D] += loss_scale * g + direct_l2 * table[(f + o) mod D]
 * dtable:   (D,) accumulated (+=); only the entries the batch uses change
 * work:     (work_size,) scratch of rnn_class_workspace_size(T, B, H, V, C, M) floats
 * dclass, dword, inputs, targets, resets, history, class_start, table, table_size,
 * direct_order: exactly as passed to / written by rnn_class_forward (direct_order >= 1).
 * The SGD step dtable gives, table -= direct_lr * dtable, differs from rnn_class_backward's
 * in-place one only in the L2 term: a use there sees the entry as the uses before it left
 * it, here as the batch found it (second order in direct_lr * direct_l2). */
int rnn_class_direct_gradient(float *dtable, float *work, int64_t work_size,
                              const float *dclass, const float *dword,
                              const int32_t *inputs, const int32_t *targets, const int32_t *resets,
                              const int32_t *history, const int32_t *class_start,
                              const float *table, int64_t table_size, int direct_order,
                              float loss_scale, float direct_l2, int T, int B, int H, int V, int C);

/* The distinct direct-table entries a T x B batch uses (rnn_class_backward updates them,
 * rnn_class_direct_gradient accumulates into them; all others stay), in ascending order.
 * They depend on the ids alone, so processes that hold the same batch list the same
 * entries without communicating.
 * entries:  (capacity,) int64: receives them; *count their number. RNN_E_SIZE when there
 *           are more than capacity (at most min(D, direct_order * the sum over positions
 *           with a target of (C + |class of the target|)))
 * seen:     ((D + 7) / 8,) bytes of scratch (a bitmap of the entries used)
 * inputs, targets, resets, history, class_start, table_size, direct_order (>= 1): as for
 * rnn_class_forward. */
int rnn_direct_entries(int64_t *entries, int64_t *count, int64_t capacity, uint8_t *seen,
                       const int32_t *inputs, const int32_t *targets, const int32_t *resets,
                       const int32_t *history, const int32_t *class_start,
                       int64_t table_size, int direct_order, int T, int B, int V, int C);

/* One inference step with the class-factored output, giving the FULL distribution:
 * h_out:          (B, H) new state; must not alias h_in
 * class_logprobs: (B, C) log P(c | h_out)
 * logprobs:       (B, V) log P(w | h_out) = log P(c(w) | h_out) + log P(w | c(w), h_out)
 * tokens:         (B,) the inputs of this step; history (B, K) or NULL: the inputs before
 *                 them (for the direct features), as for rnn_class_forward.
 * Scoring given targets only is rnn_class_forward with T = 1 and h0 = the state (hs[0] is
 * then h_out): (C + |c|) H per row instead of V H. */
int rnn_class_step(float *h_out, float *class_logprobs, float *logprobs,
                   const int32_t *tokens, const int32_t *history, const float *h_in,
                   const float *params, const int32_t *class_start,
                   const float *table, int64_t table_size, int direct_order,
                   int activation, int B, int H, int V, int C);

/* Optimizers over flat buffers of n floats. The SGD and Adam steps also take, in the same
 * pass (one read and write of each buffer per step instead of three or four), the two
 * things a trainer does to the weights after the step:
 *   params[i] *= shrink      decoupled weight decay (AdamW's: 1 - lr * weight_decay; 1: none)
 *   average[i] += fraction * (params[i] - average[i])    a moving average of the weights
 *                            (average NULL: none; fraction in [0, 1])
 * each as its own float operation, in that order, so the result is the one of the step
 * followed by separate passes, bit for bit. average must not alias the other buffers. */
/* params -= lr * grads */
int rnn_sgd_update(float *params, float *average, const float *grads, float lr, float shrink,
                   float fraction, int64_t n);
/* params[index[k]] -= lr * grads[k] for k < n: the step of a sparse gradient (the direct
 * table's, summed across processes: rnnkit/mpi.py) on params of `size` floats. index (n,)
 * rises strictly within [0, size); else RNN_E_INDEX and nothing is written. */
int rnn_sparse_sgd_update(float *params, int64_t size, const int64_t *index, const float *grads,
                          float lr, int64_t n);
/* Adam (Kingma & Ba) with bias correction; step counts from 1; m, v start at zero. */
int rnn_adam_update(float *params, float *m, float *v, float *average, const float *grads,
                    float lr, float beta1, float beta2, float eps, int64_t step, float shrink,
                    float fraction, int64_t n);
/* A moving average kept lazily, for an array that changes at a few entries per step (the
 * direct table: rnnkit/train.py). Entry i of `average` is up to date with step synced[i],
 * and raw[i] has not changed since; it catches up to step `step` with the product p of the
 * decays of the steps between, at once:
 *   p = exp(log_decay[step] - log_decay[synced[i]]),
 *   average[i] += (1 - p) * (raw[i] - average[i])
 * (the steps' average[i] += (1 - decay) * (raw[i] - average[i]) one by one, up to rounding).
 * The caller then records that entry i is up to date with `step` (synced is only read, so a
 * caught-up copy of the average leaves the lazy state as it was). log_decay (steps,) holds
 * the running sums of the logs of the decays: log_decay[t] - log_decay[s] is the log of the
 * product of the decays of steps s+1 .. t. For the n entries index (n,) (rising strictly
 * within [0, size)), or every entry of the arrays of `size` when index is NULL (n is then
 * not read). RNN_E_INDEX for a bad index, RNN_E_ARGUMENT for a step outside [0, steps) or a
 * synced value outside [0, step]: nothing is written then. */
int rnn_average_catch_up(float *average, const float *raw, const int32_t *synced, int64_t size,
                         const int64_t *index, int64_t n, const double *log_decay, int64_t steps,
                         int64_t step);
/* Global-norm clipping: norm receives ||grads||_2 before clipping; when it exceeds
 * max_norm the gradients are scaled by max_norm / norm. max_norm <= 0 only measures. */
int rnn_clip_grad_norm(float *norm, float *grads, float max_norm, int64_t n);

/* ==================================================================================
 * n-gram queries (csrc/ngram.c)
 *
 * Scoring on an n-gram model's arrays as rnnkit/ngram.py lays them out: order n's
 * n-grams numbered 0..count[n]-1 by key = (index of the suffix in order n-1) * V +
 * id(first word); a unigram's index is its word id. Every order n >= 2 and the
 * vocabulary have a hash table of ngram_table_size(count) int64 entries (0 = empty,
 * else index << 32 | a fingerprint of the n-gram's hash; see ngram.c) built by
 * ngram_table_build / ngram_vocab_build. An ngram_model is filled by
 * rnnkit/kernel.py from arrays it checked; the functions never trust the arrays'
 * contents (indices read from them are range-checked), never allocate and return
 * RNN_OK or a status (ngram_strerror names it).
 *
 * Numbers: NGRAM_FLOAT64 is NgramModel's scoring (log10 prob plus a float64 sum of the
 * backoffs charged, checked and clamped to <= 0 as lm.checked does), NGRAM_FLOAT32 is
 * rnnkit.kenlm's (float32 sums, as KenLM). `slack` is lm.POSITIVE_SLACK: a value above
 * it, or NaN, stops the call with NGRAM_E_NOT_PROBABILITY and the value in bad_value.
 * KenLM states are int64 codes: index * NGRAM_STATE_LENGTHS + length, the n-gram of
 * `length` words (order `length`, index `index`) the state holds; 0 is the null context.
 * ================================================================================== */

enum ngram_limits {
    NGRAM_MAX_ORDER = 100,          /* rnnkit/arpa.py MAX_ORDER */
    NGRAM_STATE_LENGTHS = 128,      /* > NGRAM_MAX_ORDER */
    NGRAM_MAX_SENTENCE = 512,       /* units of one ngram_score_text call */
    NGRAM_MAX_COUNT = 2147483647    /* n-grams of one order (and units): 31-bit indices in table entries */
};

enum ngram_split {
    NGRAM_SPLIT_WORDS = 0,          /* units separated by ASCII whitespace (KenLM's words) */
    NGRAM_SPLIT_CHARS = 1,          /* every UTF-8 character is a unit */
    NGRAM_SPLIT_NONE = 2            /* each range is one unit */
};

enum ngram_precision { NGRAM_FLOAT64 = 0, NGRAM_FLOAT32 = 1 };

enum ngram_status {
    NGRAM_E_STATE = 64,             /* a state code that names no n-gram of the model */
    NGRAM_E_OFFSETS = 65,           /* offsets / ends not non-decreasing within the text */
    NGRAM_E_UTF8 = 66,              /* a vocabulary unit that is not UTF-8 */
    NGRAM_E_DUPLICATE = 67,         /* a vocabulary unit not found at its own id */
    NGRAM_E_TABLE = 68,             /* an n-gram not found at its own index */
    NGRAM_E_CORRUPT = 69,           /* a key whose suffix is outside the order below */
    NGRAM_E_NOT_PROBABILITY = 70,   /* a log10 probability NaN or above slack */
    NGRAM_E_LONG = 71               /* more than NGRAM_MAX_SENTENCE units */
};

typedef struct {
    const uint8_t *text;            /* the units' UTF-8 bytes, one after the other */
    int64_t text_size;
    const int64_t *offsets;         /* (size + 1,): unit i is text[offsets[i]..offsets[i+1]) */
    int64_t size;                   /* V */
    const int64_t *table;           /* (table_size,) */
    int64_t table_size;
} ngram_vocab;

/* Arrays indexed by order 1..order (101 = NGRAM_MAX_ORDER + 1 entries). */
typedef struct {
    int order;
    ngram_vocab vocab;
    int64_t count[101];             /* count[1] = V */
    const int64_t *keys[101];       /* n >= 2: (count[n],) increasing */
    const float *prob[101];         /* (count[n],) log10 */
    const float *backoff[101];      /* n < order: (count[n],) log10 */
    const uint8_t *extendable[101]; /* n < order: 1 where KenLM's state keeps the n-gram */
    const int64_t *table[101];      /* n >= 2: (table_size[n],) */
    int64_t table_size[101];
} ngram_model;

/* What ngram_base_score returns: KenLM's FullScoreReturn and the state after the word. */
typedef struct {
    double log10;                   /* float32 value; the bad value on NGRAM_E_NOT_PROBABILITY */
    int64_t state;
    int32_t length;                 /* the n-gram length matched */
    int32_t oov;                    /* the word is <unk> */
} ngram_step;

const char *ngram_strerror(int status);

/* Entries of a table for `count` keys (count + count / 2 + 1); -1 outside [0, NGRAM_MAX_COUNT]. */
int64_t ngram_table_size(int64_t count);
/* The table of one order n >= 2 of V words: keys (count,); lower_hashes (lower_count,)
 * the hashes of order n-1 as this function wrote them to `hashes` (count,) or NULL for
 * n = 2 (lower_count = V); hashes may be NULL at the top order. */
int ngram_table_build(int64_t *table, int64_t table_size, const int64_t *keys, int64_t count, int64_t V,
                      const int64_t *lower_hashes, int64_t lower_count, int64_t *hashes);
/* Looks up n-grams 0, stride, 2 stride, ... of order n of m (whose keys of orders 2..n,
 * counts and table n are set): each must be found at its own index (*bad: the first
 * that is not). */
int ngram_table_check(const ngram_model *m, int n, int64_t stride, int64_t *bad);
int ngram_vocab_build(int64_t *table, int64_t table_size, const uint8_t *text, int64_t text_size,
                      const int64_t *offsets, int64_t size, int64_t *bad);
/* Every unit valid UTF-8 and found at its own id (so no two are equal); *bad: the first that is not. */
int ngram_vocab_check(const int64_t *table, int64_t table_size, const uint8_t *text, int64_t text_size,
                      const int64_t *offsets, int64_t size, int64_t *bad);

/* The id of one unit (its UTF-8 bytes); 0 (<unk>) when the vocabulary lacks it. */
int ngram_unit_id(const ngram_vocab *vocab, const char *unit, int64_t size, int64_t *id);

/* Ids of the units of n texts (text[ends[s-1]..ends[s]), ends[-1] = 0) split by `split`;
 * unknown units are 0 (<unk>). ids: (capacity,), lengths: (n,) units per text. */
int ngram_lookup(const ngram_vocab *vocab, int split, const char *text, int64_t text_size,
                 const int64_t *ends, int64_t n, int64_t *ids, int64_t capacity, int64_t *lengths);

/* Scores n_sentences sentences of ids (lengths[s] ids each, in [0, V)), after <s> (bos)
 * or the null context, with </s> (eos). Per scored position (when logp is given; match
 * and oov then too): log10, n-gram length matched, OOV flag, at most capacity of them.
 * totals (or NULL): per sentence, the sum in order from 0 (float64, or float32). */
int ngram_score_ids(const ngram_model *m, const int64_t *ids, int64_t n_ids, const int64_t *lengths,
                    int64_t n_sentences, int bos, int eos, int precision, double slack,
                    double *logp, int32_t *match, uint8_t *oov, int64_t capacity, double *totals,
                    double *bad_value);

/* log10 P of one sentence given as UTF-8 text: split, looked up and scored in one call.
 * The float64 total is numpy's sum of the values (LanguageModel.score's), the float32
 * one KenLM's sum in order. */
int ngram_score_text(const ngram_model *m, int split, const char *text, int64_t text_size, int bos, int eos,
                     int precision, double slack, double *total, double *bad_value);

/* KenLM's BaseFullScore: word id `word` after `state`, float32. */
int ngram_base_score(const ngram_model *m, int64_t state, int64_t word, double slack, ngram_step *out);

/* The query functions rnnkit._ngram_py (csrc/ngram_py.c, CPython's own entry points for
 * the hottest calls) runs. That module does not link this code: rnnkit/kernel.py hands it
 * this table's address with a model's, so there is one compiled copy of every query. */
typedef struct {
    int (*unit_id)(const ngram_vocab *vocab, const char *unit, int64_t size, int64_t *id);
    int (*score_text)(const ngram_model *m, int split, const char *text, int64_t text_size, int bos, int eos,
                      int precision, double slack, double *total, double *bad_value);
    int (*base_score)(const ngram_model *m, int64_t state, int64_t word, double slack, ngram_step *out);
} ngram_functions;

const ngram_functions *ngram_function_table(void);

#endif /* RNNKIT_RNN_H */
