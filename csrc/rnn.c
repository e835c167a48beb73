/* rnn.c: rnnkit's hand-written tanh-RNN language-model kernel.
 *
 * Purpose: forward, fused softmax + cross-entropy, backward through time, a one-step
 * inference function and the optimizer updates for the Elman RNN of rnn.h, on
 * caller-owned float32 buffers; the same with a class-factored output and hashed
 * maximum-entropy direct connections (RNNME). Matrix products go to BLAS sgemm; the
 * recurrence, the activations, the softmax, BPTT and the optimizers are ours.
 *
 * Non-goals: allocation, I/O, other cell types (LSTM/GRU), mixed precision. Never
 * built with -ffast-math: the softmax relies on IEEE exp/log behaviour.
 *
 * Speed notes (issue 6; benchmarks/bench_kernel.py measures them). A training step is
 * three big GEMMs of the output layer (BLAS) plus passes over the (T*B, V) logits.
 * Those passes are ours and must run at vector speed without -ffast-math, so:
 *  - the softmax uses exp_vec(), Cephes expf in vector form (libm expf is a scalar
 *    call and took ~15% of a C1 step);
 *  - reductions (max, sums) keep one accumulator per vector lane, because IEEE
 *    semantics forbid the compiler from reassociating a single accumulator;
 *  - on x86-64 Linux with GCC the hot loops are compiled for AVX-512, AVX2 and the
 *    baseline and picked at load time (target_clones), so the wheel stays portable;
 *  - with POSIX threads, the softmax rows, the optimizer loops and the large matrix
 *    products (split into single-threaded sgemm calls) run on our own threads, and
 *    OpenBLAS stays single-threaded. The threads are created per loop and joined,
 *    not pooled: a pool spins between regions and, on 2 cores, steals the core the
 *    next loop needs (an OpenMP pool: C5 at 2 threads 2 ms -> 8 ms; OpenBLAS's own
 *    pool, woken by every openblas_set_num_threads: C1 at 2 threads 154 -> 114 ms
 *    once it was left asleep). Results do not depend on the thread count except for
 *    the order of the partial sums of the clip norm (summed in double, in a fixed
 *    order for a given count);
 *  - GEMMs under ~8 MFLOP (the recurrence's per-step products) run on one thread,
 *    see gemm().
 */
#include "rnn.h"

#include <math.h>
#include <string.h>
#include <limits.h>

#include "cblas.h"

#if defined(__unix__) || defined(__APPLE__)
#define RNN_PTHREADS 1
#include <pthread.h>
#endif

/* scipy-openblas32 exports every symbol with a `scipy_` prefix; keep that detail here. */
#ifndef RNN_BLAS_PREFIX_NONE
#define RNN_BLAS(name) scipy_##name
#else
#define RNN_BLAS(name) name
#endif

/* Rows of logits computed at once when no (T, B, V) dlogits buffer is given. */
#define RNN_CHUNK_ROWS 64
/* ... or more rows, up to this many logits (16 MB): scoring a file then runs a few
 * large GEMMs instead of hundreds of 64-row ones, each with its own thread fan-out. */
#define RNN_CHUNK_FLOATS ((int64_t)1 << 22)

/* Rows of logits per chunk of the scoring path (dlogits == NULL). */
static int64_t chunk_rows(int64_t N, int V) {
    int64_t rows = RNN_CHUNK_FLOATS / V;
    if (rows < RNN_CHUNK_ROWS) rows = RNN_CHUNK_ROWS;
    return rows < N ? rows : N;
}

/* Function multiversioning: GCC emits one copy of a function per listed target and an
 * ifunc resolver picks the best one for the running CPU (needs glibc's ifunc support,
 * hence the guard: musl, macOS, Windows and clang get the baseline build only). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
#define RNN_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define RNN_MULTIVERSION
#endif

/* Independent accumulators per reduction: 16 floats = one AVX-512 register. */
#define RNN_LANES 16

/* ------------------------------------------------------------------------------------
 * status, sizes, threads
 * ---------------------------------------------------------------------------------- */

int rnn_abi_version(void) { return RNN_ABI_VERSION; }

const char *rnn_strerror(int status) {
    switch (status) {
    case RNN_OK: return "ok";
    case RNN_E_SIZE: return "invalid size (each of T, B, H, V must be in [1, 2^30], T*B < 2^31, V*H, H*H and T*B*H <= 2^40, n <= 2^42)";
    case RNN_E_TOKEN: return "input token id out of range [0, V)";
    case RNN_E_TARGET: return "target token id out of range [-1, V)";
    case RNN_E_RESET: return "reset flag other than 0 or 1";
    case RNN_E_ACTIVATION: return "unknown activation (0 = tanh, 1 = logistic, 2 = identity)";
    case RNN_E_WORKSPACE: return "work buffer smaller than rnn_workspace_size()";
    case RNN_E_NULL: return "a required buffer is NULL";
    case RNN_E_ALIAS: return "an output buffer aliases an input buffer";
    case RNN_E_ARGUMENT: return "a scalar argument is out of range";
    case RNN_E_NONFINITE: return "non-finite value (NaN or infinity) encountered";
    case RNN_E_CLASS: return "class_start must rise strictly from 0 to V (C classes in [1, V], none empty)";
    case RNN_E_HISTORY: return "direct history id out of range [-1, V)";
    case RNN_E_INDEX: return "sparse index not rising strictly within [0, size)";
    default: return "unknown rnnkit kernel error";
    }
}

/* The limits of rnn.h. With every size <= 2^30, int expressions such as `i + 2 * H` in
 * the loops cannot overflow; with the products <= 2^40, neither can P or the workspace
 * size (< 2^42) in int64_t. 2^40 floats are 4 TiB: no real model comes near. */
#define RNN_MAX_PRODUCT ((int64_t)1 << 40)
#define RNN_MAX_FLAT ((int64_t)1 << 42)

static int check_sizes(int T, int B, int H, int V) {
    if (T < 1 || B < 1 || H < 1 || V < 1) return RNN_E_SIZE;
    if (T > RNN_MAX_DIM || B > RNN_MAX_DIM || H > RNN_MAX_DIM || V > RNN_MAX_DIM) return RNN_E_SIZE;
    int64_t N = (int64_t)T * B;
    if (N > INT_MAX) return RNN_E_SIZE;                       /* BLAS dimensions are int */
    if ((int64_t)V * H > RNN_MAX_PRODUCT || (int64_t)H * H > RNN_MAX_PRODUCT ||
        N * H > RNN_MAX_PRODUCT)
        return RNN_E_SIZE;
    return RNN_OK;
}

int64_t rnn_num_params(int V, int H, int C) {
    if (check_sizes(1, 1, H, V) != RNN_OK || C < 0 || C > V) return -1;
    return 2 * (int64_t)V * H + (int64_t)H * H + H + V + (int64_t)C * H + C;
}

int64_t rnn_workspace_size(int T, int B, int H, int V) {
    if (check_sizes(T, B, H, V) != RNN_OK) return -1;
    int64_t N = (int64_t)T * B;
    int64_t chunk = chunk_rows(N, V);
    int64_t fwd = chunk * V;                       /* logits of one chunk of rows */
    int64_t bwd = 2 * N * H + (int64_t)B * H + N;  /* dz, masked dz, dh_next, ones */
    return fwd > bwd ? fwd : bwd;
}

/* Threads of the kernel's loops and products; 0 until set or first used (then
 * OpenBLAS's default: OPENBLAS_NUM_THREADS or the CPU count). */
static int own_threads = 0;

#define RNN_MAX_THREADS 64

/* Threads for a loop of `items` units: at most rnn_get_num_threads() and
 * RNN_MAX_THREADS, and at least min_items units each, since starting and joining a
 * thread costs tens of microseconds. */
static int threads_for(int64_t items, int64_t min_items) {
#ifdef RNN_PTHREADS
    int64_t t = rnn_get_num_threads();
    if (t > items / min_items) t = items / min_items;
    if (t > RNN_MAX_THREADS) t = RNN_MAX_THREADS;
    return t < 1 ? 1 : (int)t;
#else
    (void)items;
    (void)min_items;
    return 1;
#endif
}

/* One slice [lo, hi) of a parallel loop; `slice` numbers it from 0. */
typedef void (*rnn_slice_fn)(void *ctx, int slice, int64_t lo, int64_t hi);

struct rnn_slice {
    rnn_slice_fn fn;
    void *ctx;
    int slice;
    int64_t lo, hi;
};

static void *run_slice(void *arg) {
    struct rnn_slice *s = (struct rnn_slice *)arg;
    s->fn(s->ctx, s->slice, s->lo, s->hi);
    return NULL;
}

/* fn over [0, n) in nt contiguous slices, slice 0 on the calling thread. Fixed slices
 * keep results independent of scheduling. If a thread cannot be started, its slice
 * runs on the caller after the others: slower, never wrong. */
static void parallel_for(int nt, int64_t n, rnn_slice_fn fn, void *ctx) {
    struct rnn_slice slices[RNN_MAX_THREADS];
    if (nt < 1) nt = 1;
    if (nt > RNN_MAX_THREADS) nt = RNN_MAX_THREADS;
    int64_t per = (n + nt - 1) / nt;
    for (int t = 0; t < nt; t++) {
        int64_t lo = (int64_t)t * per < n ? (int64_t)t * per : n;
        int64_t hi = lo + per < n ? lo + per : n;
        slices[t] = (struct rnn_slice){fn, ctx, t, lo, hi};
    }
#ifdef RNN_PTHREADS
    pthread_t ids[RNN_MAX_THREADS];
    int started[RNN_MAX_THREADS] = {0};
    for (int t = 1; t < nt; t++)
        started[t] = pthread_create(&ids[t], NULL, run_slice, &slices[t]) == 0;
    run_slice(&slices[0]);
    for (int t = 1; t < nt; t++) {
        if (started[t]) pthread_join(ids[t], NULL);
        else run_slice(&slices[t]);
    }
#else
    for (int t = 0; t < nt; t++) run_slice(&slices[t]);
#endif
}

/* The kernel runs its own threads, and OpenBLAS single-threaded. OpenBLAS's pool
 * spins after it is woken (each openblas_set_num_threads call wakes it), and a
 * spinning worker on a 2-core machine takes the core our next loop needs: a C1 step
 * forward took 63 ms after a backward instead of 43 ms. threads_init runs once, before
 * any product (gemm and every rnn_*_threads call it): it takes over OpenBLAS's default
 * count, unless rnn_set_num_threads already gave one, and leaves OpenBLAS at 1. */
#ifdef RNN_PTHREADS
static pthread_once_t threads_once = PTHREAD_ONCE_INIT;

static void threads_init_once(void) {
    int expected = 0;
    int blas_default = RNN_BLAS(openblas_get_num_threads)();
    __atomic_compare_exchange_n(&own_threads, &expected, blas_default < 1 ? 1 : blas_default, 0,
                                __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    RNN_BLAS(openblas_set_num_threads)(1);
}

static void threads_init(void) { pthread_once(&threads_once, threads_init_once); }
#else
static void threads_init(void) {
    if (own_threads == 0) own_threads = RNN_BLAS(openblas_get_num_threads)();
}
#endif

int rnn_set_num_threads(int n) {
    if (n < 1) return RNN_E_ARGUMENT;
    threads_init();
#ifdef RNN_PTHREADS
    __atomic_store_n(&own_threads, n, __ATOMIC_SEQ_CST);
#else
    own_threads = n;
    RNN_BLAS(openblas_set_num_threads)(n);  /* no threads of our own: BLAS's are all there are */
#endif
    return RNN_OK;
}

int rnn_get_num_threads(void) {
    threads_init();
#ifdef RNN_PTHREADS
    return __atomic_load_n(&own_threads, __ATOMIC_SEQ_CST);
#else
    return own_threads;
#endif
}

/* ------------------------------------------------------------------------------------
 * helpers
 * ---------------------------------------------------------------------------------- */

/* Below this many flops a GEMM runs on one thread: the per-step products of the
 * recurrence (B x H x H, 4 MFLOP at C1) gain little from a second thread on an idle
 * machine, and when a core is busy every multithreaded call waits for a time slice
 * (C5 scoring at 2 threads went from 3 to 30 ms on a shared machine). */
#define RNN_SERIAL_GEMM_FLOPS (8.0 * 1024 * 1024)

/* One sgemm call on the calling thread's share of C, for parallel_for. */
struct gemm_job {
    int transA, transB, M, N, K, lda, ldb, ldc, split_n;
    float alpha, beta;
    const float *A, *B;
    float *C;
};

/* Slices are in units of RNN_GEMM_BLOCK rows or columns of C, so every slice but the
 * last keeps whole register tiles of the BLAS kernel. */
#define RNN_GEMM_BLOCK 16

static void gemm_slice(void *ctx, int slice, int64_t lo, int64_t hi) {
    const struct gemm_job *g = (const struct gemm_job *)ctx;
    (void)slice;
    int dim = g->split_n ? g->N : g->M;
    int from = (int)(lo * RNN_GEMM_BLOCK), to = (int)(hi * RNN_GEMM_BLOCK < dim ? hi * RNN_GEMM_BLOCK : dim);
    if (from >= to) return;
    const float *A = g->A, *B = g->B;
    float *C = g->C;
    int M = g->M, N = g->N;
    if (g->split_n) {           /* columns [from, to) of C and of op(B) */
        B += g->transB ? (size_t)from * g->ldb : (size_t)from;
        C += from;
        N = to - from;
    } else {                    /* rows [from, to) of C and of op(A) */
        A += g->transA ? (size_t)from : (size_t)from * g->lda;
        C += (size_t)from * g->ldc;
        M = to - from;
    }
    RNN_BLAS(cblas_sgemm)(CblasRowMajor, g->transA ? CblasTrans : CblasNoTrans,
                          g->transB ? CblasTrans : CblasNoTrans, M, N, g->K, g->alpha, A, g->lda,
                          B, g->ldb, g->beta, C, g->ldc);
}

/* C (M, N) = alpha * op(A) op(B) + beta * C, row-major.
 * Large products are split over our own threads along the longer side of C, each
 * slice one single-threaded sgemm, instead of OpenBLAS's threads: one fork/join per
 * product rather than a synchronisation per block. Splitting C does not change how an
 * element is summed over K, so on this OpenBLAS 1 and 2 threads give identical bits
 * (tested); other BLAS builds may pick other kernels for narrower slices. */
static void gemm(int transA, int transB, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *Bm, int ldb, float beta,
                 float *C, int ldc) {
    threads_init();  /* OpenBLAS single-threaded from the first product on */
    double flops = 2.0 * M * N * K;
    int split_n = N >= M;
    int64_t blocks = ((split_n ? N : M) + RNN_GEMM_BLOCK - 1) / RNN_GEMM_BLOCK;
    struct gemm_job job = {transA, transB, M, N, K, lda, ldb, ldc, split_n, alpha, beta, A, Bm, C};
#ifdef RNN_PTHREADS
    parallel_for(flops < RNN_SERIAL_GEMM_FLOPS ? 1 : threads_for(blocks, 1), blocks, gemm_slice, &job);
#else
    /* no threads of our own: OpenBLAS's, except for small products (see above) */
    int threads = flops < RNN_SERIAL_GEMM_FLOPS ? RNN_BLAS(openblas_get_num_threads)() : 1;
    if (threads > 1) RNN_BLAS(openblas_set_num_threads)(1);
    gemm_slice(&job, 0, 0, blocks);
    if (threads > 1) RNN_BLAS(openblas_set_num_threads)(threads);
#endif
}

static int check_ids(const int32_t *ids, int64_t n, int32_t lo, int32_t hi) {
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < lo || ids[i] >= hi) return 1;
    return 0;
}

/* The ids of a class-factored call's batch (rnn.h): RNN_OK or the status naming the array. */
static int check_class_batch(const int32_t *inputs, const int32_t *targets, const int32_t *resets,
                             const int32_t *history, int64_t N, int B, int V) {
    if (check_ids(inputs, N, 0, V)) return RNN_E_TOKEN;
    if (check_ids(targets, N, -1, V)) return RNN_E_TARGET;
    if (check_ids(resets, N, 0, 2)) return RNN_E_RESET;
    if (history && check_ids(history, (int64_t)B * RNN_DIRECT_HISTORY, -1, V)) return RNN_E_HISTORY;
    return RNN_OK;
}

static int check_activation(int activation) {
    return activation == RNN_ACT_TANH || activation == RNN_ACT_LOGISTIC ||
           activation == RNN_ACT_IDENTITY;
}

/* dz[j] = dh[j] * act'(z[j]), with act' written in terms of the output h = act(z). */
static void activation_backward(float *dz, const float *dh, const float *h, int H,
                                int activation) {
    switch (activation) {
    case RNN_ACT_TANH:
        for (int j = 0; j < H; j++) dz[j] = dh[j] * (1.0f - h[j] * h[j]);
        break;
    case RNN_ACT_LOGISTIC:
        for (int j = 0; j < H; j++) dz[j] = dh[j] * h[j] * (1.0f - h[j]);
        break;
    default:
        for (int j = 0; j < H; j++) dz[j] = dh[j];
        break;
    }
}

/* ------------------------------------------------------------------------------------
 * vectorisable row math for the softmax
 * ---------------------------------------------------------------------------------- */

#if defined(__GNUC__)
/* GCC/clang vector extensions, used where the auto-vectoriser gives up under IEEE
 * semantics (selects, max reductions). 8 floats = one AVX2 register: GCC splits wider
 * vectors into halves for AVX2 but turns their compares into scalar code, and AMD
 * cores run AVX-512 as two 256-bit halves anyway. */
#define RNN_VLEN 8
typedef float rnn_vf __attribute__((vector_size(RNN_VLEN * sizeof(float))));
typedef int32_t rnn_vi __attribute__((vector_size(RNN_VLEN * sizeof(int32_t))));
typedef uint32_t rnn_vu __attribute__((vector_size(RNN_VLEN * sizeof(uint32_t))));
#endif

#if defined(__GNUC__)
/* *v = exp(*v) lane-wise, for arguments <= 0 (softmax after the max is subtracted).
 * (By pointer: passing vectors by value to a baseline-ISA function trips psABI.)
 *
 * libm expf is a scalar call and took ~15% of a C1 step; this is Cephes expf in
 * vector form, within 1 ulp of expf on [-87, 0] (checked on 2M points):
 * x = n ln2 + r with n = round(x / ln2) (adding 1.5 * 2^23 rounds to an integer,
 * which then sits in the low mantissa bits), ln2 split in two (Cody-Waite) so r is
 * exact, exp(r) by Cephes' degree-7 polynomial, and 2^n written into the exponent
 * bits. x is clamped at -88 where n = -127 gives exponent bits 0, i.e. 2^n = 0, so
 * arguments whose expf is subnormal (< 1.2e-38) or -inf give 0; NaN stays NaN. */
static inline __attribute__((always_inline)) void exp_vec(rnn_vf *v) {
    const float round_shift = 12582912.0f;            /* 1.5 * 2^23 */
    const rnn_vf floor_v = (rnn_vf){0} - 88.0f;
    rnn_vf x = *v;
    rnn_vi low = x < floor_v;                          /* false for NaN: it propagates */
    x = (rnn_vf)((low & (rnn_vi)floor_v) | (~low & (rnn_vi)x));
    rnn_vf t = x * 1.44269504088896341f + round_shift;
    rnn_vf n = t - round_shift;                        /* round(x / ln2), in [-127, 0] */
    rnn_vf r = x - n * 0.693359375f;                   /* ln2 high part: n * it is exact */
    r = r - n * -2.12194440e-4f;                       /* ln2 low part */
    rnn_vf p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    rnn_vu bits = ((rnn_vu)t - 0x4B400000u + 127u) << 23;   /* (n + 127) << 23 */
    *v = p * (rnn_vf)bits;
}
#endif

#if defined(__GNUC__)
/* *v = tanh(*v) lane-wise: Cephes tanhf in vector form. |x| < 0.625: x + x^3 P(x^2);
 * else sign(x) (1 - e) / (1 + e) with e = exp(-2|x|) <= 0.29, so nothing cancels.
 * libm tanhf is a scalar call: with H = 512 it took as long as the recurrence's
 * product. Within 2 ulp of tanh (tests/test_kernel.py checks); +-inf give +-1, NaN
 * stays NaN. */
static inline __attribute__((always_inline)) void tanh_vec(rnn_vf *v) {
    const rnn_vu sign_bit = (rnn_vu){0} + 0x80000000u;
    rnn_vf x = *v;
    rnn_vu sign = (rnn_vu)x & sign_bit;
    rnn_vf ax = (rnn_vf)((rnn_vu)x & ~sign_bit);
    rnn_vf e = ax * -2.0f;
    exp_vec(&e);
    rnn_vf large = (rnn_vf)((rnn_vu)((1.0f - e) / (1.0f + e)) | sign);
    rnn_vf z = x * x;
    rnn_vf p = (((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z
                + 1.33314422036e-1f) * z - 3.33332819422e-1f;
    rnn_vf small = p * z * x + x;
    rnn_vi use_small = ax < ((rnn_vf){0} + 0.625f);
    *v = (rnn_vf)((use_small & (rnn_vi)small) | (~use_small & (rnn_vi)large));
}
#endif

RNN_MULTIVERSION
static void tanh_row(float *h, int H) {
    int j = 0;
#if defined(__GNUC__)
    for (; j + RNN_VLEN <= H; j += RNN_VLEN) {
        rnn_vf v;
        memcpy(&v, h + j, sizeof v);
        tanh_vec(&v);
        memcpy(h + j, &v, sizeof v);
    }
    if (j < H) {                      /* tail, padded with zeros */
        rnn_vf v = {0};
        memcpy(&v, h + j, (size_t)(H - j) * sizeof(float));
        tanh_vec(&v);
        memcpy(h + j, &v, (size_t)(H - j) * sizeof(float));
        j = H;
    }
#endif
    for (; j < H; j++) h[j] = tanhf(h[j]);
}

/* h[j] = act(z[j]) in place */
static void activate(float *h, int H, int activation) {
    switch (activation) {
    case RNN_ACT_TANH:
        tanh_row(h, H);
        break;
    case RNN_ACT_LOGISTIC:
        for (int j = 0; j < H; j++) h[j] = 1.0f / (1.0f + expf(-h[j]));
        break;
    default:
        break;
    }
}

/* row[i] += bias[i]; returns max_i row[i]. The max is exact in any order, so
 * lane-wise partial maxima change nothing; GCC does not vectorise a ?: max reduction
 * without -ffinite-math-only, hence the vector extensions. */
RNN_MULTIVERSION
static float row_add_max(float *row, const float *bias, int V) {
    for (int i = 0; i < V; i++) row[i] += bias[i];
    float mx = -INFINITY;
    int i = 0;
#if defined(__GNUC__)
    if (V >= 2 * RNN_VLEN) {          /* two accumulators: the compare has latency */
        rnn_vf m0, m1, v;
        rnn_vi gt;
        memcpy(&m0, row, sizeof m0);
        memcpy(&m1, row + RNN_VLEN, sizeof m1);
        for (i = 2 * RNN_VLEN; i + 2 * RNN_VLEN <= V; i += 2 * RNN_VLEN) {
            memcpy(&v, row + i, sizeof v);
            gt = v > m0;
            m0 = (rnn_vf)((gt & (rnn_vi)v) | (~gt & (rnn_vi)m0));
            memcpy(&v, row + i + RNN_VLEN, sizeof v);
            gt = v > m1;
            m1 = (rnn_vf)((gt & (rnn_vi)v) | (~gt & (rnn_vi)m1));
        }
        for (int k = 0; k < RNN_VLEN; k++) {
            mx = m0[k] > mx ? m0[k] : mx;
            mx = m1[k] > mx ? m1[k] : mx;
        }
    }
#endif
    for (; i < V; i++) mx = row[i] > mx ? row[i] : mx;
    return mx;
}

/* sum_i exp(src[i] - shift). dst, which may be src, receives the exponentials unless
 * it is NULL. Float vector lanes add up one block of 256 values (16 terms per lane, so
 * their rounding stays within a few ulp), and block sums are added in double. Other
 * compilers get libm expf and a plain double sum. */
RNN_MULTIVERSION
static double row_exp_sum(float *dst, const float *src, int V, float shift) {
    double sum = 0.0;
    int i = 0;
#if defined(__GNUC__)
    while (i < V) {
        rnn_vf part0 = {0}, part1 = {0}, a, b;
        int end = V - i < 256 ? V : i + 256;
        for (; i + 2 * RNN_VLEN <= end; i += 2 * RNN_VLEN) {   /* two chains in flight */
            memcpy(&a, src + i, sizeof a);
            memcpy(&b, src + i + RNN_VLEN, sizeof b);
            a -= shift;
            b -= shift;
            exp_vec(&a);
            exp_vec(&b);
            if (dst) {
                memcpy(dst + i, &a, sizeof a);
                memcpy(dst + i + RNN_VLEN, &b, sizeof b);
            }
            part0 += a;
            part1 += b;
        }
        for (; i < end; i += RNN_VLEN) {  /* tail, padded with -inf whose exp is 0 */
            int n = end - i < RNN_VLEN ? end - i : RNN_VLEN;
            for (int k = 0; k < RNN_VLEN; k++) a[k] = k < n ? src[i + k] : -INFINITY;
            a -= shift;
            exp_vec(&a);
            if (dst) memcpy(dst + i, &a, (size_t)n * sizeof(float));
            part0 += a;
        }
        part0 += part1;
        for (int k = 0; k < RNN_VLEN; k++) sum += (double)part0[k];
    }
#endif
    for (; i < V; i++) {
        float e = expf(src[i] - shift);
        if (dst) dst[i] = e;
        sum += e;
    }
    return sum;
}

RNN_MULTIVERSION
static void row_scale(float *row, int V, float s) {
    for (int i = 0; i < V; i++) row[i] *= s;
}

/* sum_i x[i]^2 in double, lane-wise (clip_grad_norm over all parameters). */
RNN_MULTIVERSION
static double sum_squares(const float *x, int64_t n) {
    double acc[RNN_LANES] = {0};
    double tail = 0.0;
    int64_t i = 0;
    for (; i + RNN_LANES <= n; i += RNN_LANES)
        for (int k = 0; k < RNN_LANES; k++) acc[k] += (double)x[i + k] * (double)x[i + k];
    for (; i < n; i++) tail += (double)x[i] * (double)x[i];
    for (int k = 0; k < RNN_LANES; k++) tail += acc[k];
    return tail;
}

/* ------------------------------------------------------------------------------------
 * output-layer logits for a few rows (scoring one sentence, sampling)
 * ---------------------------------------------------------------------------------- */

/* Up to this many rows of logits go through few_rows_logits() instead of sgemm. */
#define RNN_FEW_ROWS 32

/* The dot products below want fused multiply-adds; -std=c99 turns contraction off
 * file-wide, so it is turned back on for this function alone. The "fma" clone (AVX +
 * FMA, 8-float vectors) is the fast one on AVX2 and AVX-512 CPUs alike ("avx512f" alone
 * does not enable FMA), and the option names work on old GCCs (x86-64-v3 needs GCC 11). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
#define RNN_DOT_MULTIVERSION \
    __attribute__((optimize("fp-contract=fast"), target_clones("fma", "default")))
#else
#define RNN_DOT_MULTIVERSION
#endif

#if defined(__GNUC__)
/* [a0+a1, a2+a3, b0+b1, b2+b3, a4+a5, a6+a7, b4+b5, b6+b7], vhaddps's lane order.
 * A macro, not a function: vectors passed by value to a baseline-ISA function trip the
 * psABI (see exp_vec). __builtin_shuffle is GCC's; clang spells it shufflevector. */
#if defined(__clang__)
#define RNN_HADD8(a, b) (__builtin_shufflevector(a, b, 0, 2, 8, 10, 4, 6, 12, 14) + \
                         __builtin_shufflevector(a, b, 1, 3, 9, 11, 5, 7, 13, 15))
#else
#define RNN_HADD8(a, b) (__builtin_shuffle(a, b, (rnn_vi){0, 2, 8, 10, 4, 6, 12, 14}) + \
                         __builtin_shuffle(a, b, (rnn_vi){1, 3, 9, 11, 5, 7, 13, 15}))
#endif
#endif

/* out[m * V + v] = h[m] . W[v] for m < M, v < V (h: (M, H), W: (V, H), row-major).
 * Why not sgemm: for M ~ 20 rows (one sentence) OpenBLAS spends half of the call
 * packing W_hy (10 MB at V = 10000, H = 256) into its panel layout, every call
 * (perf: sgemm_incopy 48%, the compute kernel 32%). Here W is read once, four rows
 * at a time, against pairs of h rows that stay in L1: 8 accumulators and 6 loaded
 * vectors fit the 16 AVX registers. Each dot product is summed lane-wise over H, then
 * across the lanes, in a fixed order for a given H. */
RNN_DOT_MULTIVERSION
static void few_rows_logits(float *out, const float *h, int M, const float *W, int V, int H,
                            int v_from, int v_to) {
    for (int v = v_from; v < v_to; v += 4) {
        const int nv = v_to - v < 4 ? v_to - v : 4;
        /* a vocabulary tail repeats row v; its results are not stored */
        const float *w0 = W + (size_t)v * H;
        const float *w1 = nv > 1 ? w0 + H : w0, *w2 = nv > 2 ? w0 + 2 * H : w0, *w3 = nv > 3 ? w0 + 3 * H : w0;
        for (int m = 0; m < M; m += 2) {
            const int nm = M - m < 2 ? M - m : 2;
            const float *x0 = h + (size_t)m * H, *x1 = nm > 1 ? x0 + H : x0;
            float dot[2][4];
            int k = 0;
#if defined(__GNUC__)
            /* named variables, not arrays: GCC then keeps all 14 vectors in registers */
            rnn_vf c00 = {0}, c01 = {0}, c02 = {0}, c03 = {0}, c10 = {0}, c11 = {0}, c12 = {0}, c13 = {0};
            for (; k + RNN_VLEN <= H; k += RNN_VLEN) {
                rnn_vf a0, a1, b0, b1, b2, b3;
                memcpy(&a0, x0 + k, sizeof a0);
                memcpy(&a1, x1 + k, sizeof a1);
                memcpy(&b0, w0 + k, sizeof b0);
                memcpy(&b1, w1 + k, sizeof b1);
                memcpy(&b2, w2 + k, sizeof b2);
                memcpy(&b3, w3 + k, sizeof b3);
                c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
                c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
            }
            /* a row's 4 lane-wise sums at once: pairwise adds of shuffled halves (hadd);
             * q = [d0 d1 d2 d3 | d0 d1 d2 d3], the two halves of each sum */
            rnn_vf q0 = RNN_HADD8(RNN_HADD8(c00, c01), RNN_HADD8(c02, c03));
            rnn_vf q1 = RNN_HADD8(RNN_HADD8(c10, c11), RNN_HADD8(c12, c13));
            for (int j = 0; j < 4; j++) {
                dot[0][j] = q0[j] + q0[j + 4];
                dot[1][j] = q1[j] + q1[j + 4];
            }
#else
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 4; j++) dot[i][j] = 0.0f;
#endif
            const float *x[2] = {x0, x1}, *w[4] = {w0, w1, w2, w3};
            for (; k < H; k++)
                for (int i = 0; i < 2; i++)
                    for (int j = 0; j < 4; j++) dot[i][j] += x[i][k] * w[j][k];
            for (int i = 0; i < nm; i++)
                for (int j = 0; j < nv; j++) out[(size_t)(m + i) * V + v + j] = dot[i][j];
        }
    }
}

struct few_rows_job {
    float *out;
    const float *h, *W;
    int M, V, H;
};

/* Vocabulary rows [4 lo, 4 hi) of few_rows_logits, for parallel_for. */
static void few_rows_slice(void *ctx, int slice, int64_t lo, int64_t hi) {
    const struct few_rows_job *job = (const struct few_rows_job *)ctx;
    (void)slice;
    int to = (int)(4 * hi < job->V ? 4 * hi : job->V);
    if (4 * lo < to) few_rows_logits(job->out, job->h, job->M, job->W, job->V, job->H, (int)(4 * lo), to);
}

/* logits (M, V) = h (M, H) W_hy^T: few_rows_logits for a handful of rows, else sgemm. */
static void output_logits(float *out, const float *h, int M, const float *W_hy, int V, int H) {
    if (M <= RNN_FEW_ROWS) {
        struct few_rows_job job = {out, h, W_hy, M, V, H};
        int64_t blocks = (V + 3) / 4;
        parallel_for(threads_for((int64_t)M * V * H, RNN_SERIAL_GEMM_FLOPS / 2), blocks, few_rows_slice, &job);
    } else {
        gemm(0, 1, M, V, H, 1.0f, h, H, W_hy, H, 0.0f, out, V);
    }
}

/* Fused bias + log-softmax + cross-entropy for one row of logits.
 * Returns log P(target) (0 when target < 0). With want_grad, the row is overwritten
 * by softmax - onehot(target) (zeros when target < 0); otherwise, with logp_row set,
 * the row becomes the log-distribution. Max-subtracted, summed in double. */
static float softmax_row(float *row, const float *b_y, int V, int target, int want_grad,
                         int logp_row) {
    if (want_grad && target < 0) {
        memset(row, 0, (size_t)V * sizeof(float));
        return 0.0f;
    }
    float mx = row_add_max(row, b_y, V);
    if (want_grad) {
        float target_logit = row[target];
        double sum = row_exp_sum(row, row, V, mx);
        row_scale(row, V, (float)(1.0 / sum));
        row[target] -= 1.0f;
        return (float)((double)(target_logit - mx) - log(sum));
    }
    double sum = row_exp_sum(NULL, row, V, mx);
    float lse = (float)((double)mx + log(sum));
    float result = target >= 0 ? row[target] - lse : 0.0f;
    if (logp_row)
        for (int i = 0; i < V; i++) row[i] -= lse;
    return result;
}

/* softmax_row over rows [lo, hi) of a (rows, V) block, for parallel_for. */
struct softmax_rows {
    float *logits;              /* (rows, V), overwritten */
    float *logprobs;            /* (rows,) */
    const int32_t *targets;     /* (rows,) */
    const float *b_y;           /* (V,) */
    int V, want_grad;
};

static void softmax_rows_slice(void *ctx, int slice, int64_t lo, int64_t hi) {
    struct softmax_rows *job = (struct softmax_rows *)ctx;
    (void)slice;
    for (int64_t n = lo; n < hi; n++)
        job->logprobs[n] = softmax_row(job->logits + (size_t)n * job->V, job->b_y, job->V,
                                       job->targets[n], job->want_grad, 0);
}

/* ------------------------------------------------------------------------------------
 * forward
 * ---------------------------------------------------------------------------------- */

/* Offsets of the parameters in the flat buffer (rnn.h); W_c and b_c are empty when C = 0. */
struct rnn_layout {
    size_t W_xh, W_hh, b_h, W_hy, b_y, W_c, b_c;
};

static struct rnn_layout layout_of(int V, int H, int C) {
    struct rnn_layout L;
    L.W_xh = 0;
    L.W_hh = L.W_xh + (size_t)V * H;
    L.b_h = L.W_hh + (size_t)H * H;
    L.W_hy = L.b_h + H;
    L.b_y = L.W_hy + (size_t)V * H;
    L.W_c = L.b_y + V;
    L.b_c = L.W_c + (size_t)C * H;
    return L;
}

/* hs[t] = act(W_xh[x_t] (* in_mask[t]) + (reset ? 0 : h_{t-1} W_hh^T) + b_h) for t < T,
 * h_{-1} = h0. resets and in_mask may be NULL (one inference step: no reset, no dropout). */
static void recurrence(float *hs, const float *params, const int32_t *inputs,
                       const int32_t *resets, const float *in_mask, const float *h0,
                       int activation, int T, int B, int H, int V) {
    struct rnn_layout L = layout_of(V, H, 0);
    const float *W_xh = params + L.W_xh, *W_hh = params + L.W_hh, *b_h = params + L.b_h;
    for (int t = 0; t < T; t++) {
        const float *h_prev = t == 0 ? h0 : hs + (size_t)(t - 1) * B * H;
        float *h_t = hs + (size_t)t * B * H;
        gemm(0, 1, B, H, H, 1.0f, h_prev, H, W_hh, H, 0.0f, h_t, H);
        for (int b = 0; b < B; b++) {
            size_t pos = (size_t)t * B + b;
            float *row = h_t + (size_t)b * H;
            const float *x = W_xh + (size_t)inputs[pos] * H;
            if (resets && resets[pos])
                for (int j = 0; j < H; j++) row[j] = 0.0f;
            if (in_mask) {
                const float *m = in_mask + pos * H;
                for (int j = 0; j < H; j++) row[j] += x[j] * m[j] + b_h[j];
            } else {
                for (int j = 0; j < H; j++) row[j] += x[j] + b_h[j];
            }
            activate(row, H, activation);
        }
    }
}

/* The output layer's input: h_t, or hd = h_t * out_mask (dropout; the recurrence never
 * sees it). */
static const float *output_input(float *hd, const float *hs, const float *out_mask, int64_t n) {
    if (!out_mask) return hs;
    for (int64_t i = 0; i < n; i++) hd[i] = hs[i] * out_mask[i];
    return hd;
}

int rnn_forward(float *loss, float *logprobs, float *hs, float *hd, float *dlogits,
                float *work, int64_t work_size,
                const int32_t *inputs, const int32_t *targets, const int32_t *resets,
                const float *in_mask, const float *out_mask,
                const float *h0, const float *params,
                int activation, int T, int B, int H, int V) {
    int rc = check_sizes(T, B, H, V);
    if (rc) return rc;
    if (!loss || !logprobs || !hs || !inputs || !targets || !resets || !h0 || !params)
        return RNN_E_NULL;
    if (out_mask && !hd) return RNN_E_NULL;
    if (hd && hd == hs) return RNN_E_ALIAS;
    if (!check_activation(activation)) return RNN_E_ACTIVATION;
    const int64_t N = (int64_t)T * B;
    if (!dlogits) {
        if (!work) return RNN_E_NULL;
        if (work_size < rnn_workspace_size(T, B, H, V)) return RNN_E_WORKSPACE;
    }
    if (check_ids(inputs, N, 0, V)) return RNN_E_TOKEN;
    if (check_ids(targets, N, -1, V)) return RNN_E_TARGET;
    if (check_ids(resets, N, 0, 2)) return RNN_E_RESET;

    struct rnn_layout L = layout_of(V, H, 0);
    const float *W_hy = params + L.W_hy, *b_y = params + L.b_y;

    recurrence(hs, params, inputs, resets, in_mask, h0, activation, T, B, H, V);
    const float *hy = output_input(hd, hs, out_mask, N * H);

    /* output layer + fused softmax / cross-entropy */
    /* Rows are independent: split them over threads; the loss is summed afterwards in
     * row order so that it does not depend on the thread count. */
    if (dlogits) {
        gemm(0, 1, (int)N, V, H, 1.0f, hy, H, W_hy, H, 0.0f, dlogits, V);
        struct softmax_rows job = {dlogits, logprobs, targets, b_y, V, 1};
        parallel_for(threads_for(N * V, 1 << 20), N, softmax_rows_slice, &job);
    } else {
        const int64_t chunk = chunk_rows(N, V);
        for (int64_t start = 0; start < N; start += chunk) {
            int rows = (int)(N - start < chunk ? N - start : chunk);
            output_logits(work, hy + (size_t)start * H, rows, W_hy, V, H);
            struct softmax_rows job = {work, logprobs + start, targets + start, b_y, V, 0};
            parallel_for(threads_for((int64_t)rows * V, 1 << 20), rows, softmax_rows_slice, &job);
        }
    }
    double total = 0.0;
    for (int64_t n = 0; n < N; n++) total -= logprobs[n];
    *loss = (float)total;
    return RNN_OK;
}

/* ------------------------------------------------------------------------------------
 * backward
 * ---------------------------------------------------------------------------------- */

/* Backpropagation through time from dz = dL/dh_t of the output layer, (N, H), which
 * becomes dL/dz_t in place: accumulates dW_xh, dW_hh, db_h (the same offsets in every
 * layout) and dh0. dz_kept (N, H) and dh_next (B, H) are scratch. */
static void bptt(float *grads, float *dh0, float *dz, float *dz_kept, float *dh_next,
                 const float *hs, const int32_t *inputs, const int32_t *resets,
                 const float *in_mask, const float *h0, const float *params, int activation,
                 int T, int B, int H, int V) {
    struct rnn_layout L = layout_of(V, H, 0);
    const float *W_hh = params + L.W_hh;
    float *dW_xh = grads + L.W_xh, *dW_hh = grads + L.W_hh, *db_h = grads + L.b_h;
    /* last step first */
    memset(dh_next, 0, (size_t)B * H * sizeof(float));
    for (int t = T - 1; t >= 0; t--) {
        for (int b = 0; b < B; b++) {
            size_t pos = (size_t)t * B + b;
            float *g = dz + pos * H;
            const float *h = hs + pos * H;
            const float *carry = dh_next + (size_t)b * H;
            for (int j = 0; j < H; j++) g[j] += carry[j];      /* dh_t from above and from t+1 */
            activation_backward(g, g, h, H, activation);       /* dz_t = dh_t * act'(z_t) */
            float *dx = dW_xh + (size_t)inputs[pos] * H;
            float *kept = dz_kept + pos * H;
            int reset = resets[pos];
            const float *m = in_mask ? in_mask + pos * H : NULL;
            for (int j = 0; j < H; j++) {
                db_h[j] += g[j];
                dx[j] += m ? g[j] * m[j] : g[j];               /* embedding row of x_t */
                kept[j] = reset ? 0.0f : g[j];                 /* h_{t-1} was zero at a reset */
            }
        }
        /* dh_{t-1} = dz_t W_hh (rows that reset pass nothing back) */
        gemm(0, 0, B, H, H, 1.0f, dz_kept + (size_t)t * B * H, H, W_hh, H, 0.0f, dh_next, H);
    }
    for (int64_t i = 0; i < (int64_t)B * H; i++) dh0[i] += dh_next[i];

    /* dW_hh += sum_t dz_t^T h_{t-1}: one GEMM over steps 1..T-1, one for step 0 (h0) */
    if (T > 1)
        gemm(1, 0, H, H, (T - 1) * B, 1.0f, dz_kept + (size_t)B * H, H, hs, H, 1.0f, dW_hh, H);
    gemm(1, 0, H, H, B, 1.0f, dz_kept, H, h0, H, 1.0f, dW_hh, H);
}

int rnn_backward(float *grads, float *dh0, float *work, int64_t work_size,
                 const float *dlogits, const float *hs, const float *hd,
                 const int32_t *inputs, const int32_t *resets,
                 const float *in_mask, const float *out_mask,
                 const float *h0, const float *params, float loss_scale,
                 int activation, int T, int B, int H, int V) {
    int rc = check_sizes(T, B, H, V);
    if (rc) return rc;
    if (!grads || !dh0 || !work || !dlogits || !hs || !inputs || !resets || !h0 || !params)
        return RNN_E_NULL;
    if (out_mask && !hd) return RNN_E_NULL;
    if (!check_activation(activation)) return RNN_E_ACTIVATION;
    if (!isfinite(loss_scale)) return RNN_E_ARGUMENT;
    if (work_size < rnn_workspace_size(T, B, H, V)) return RNN_E_WORKSPACE;
    if (grads == params) return RNN_E_ALIAS;
    const int64_t N = (int64_t)T * B;
    if (check_ids(inputs, N, 0, V)) return RNN_E_TOKEN;
    if (check_ids(resets, N, 0, 2)) return RNN_E_RESET;

    struct rnn_layout L = layout_of(V, H, 0);
    const float *W_hy = params + L.W_hy;
    float *dW_hy = grads + L.W_hy;
    float *db_y = grads + L.b_y;

    float *dz = work;                         /* (N, H): dL/dh, then dL/dz in place */
    float *dz_kept = dz + (size_t)N * H;      /* (N, H): scratch of bptt() */
    float *dh_next = dz_kept + (size_t)N * H; /* (B, H): scratch of bptt() */
    float *ones = dh_next + (size_t)B * H;    /* (N,): all 1, for the db_y column sum */

    /* output layer: dh = s * dlogits W_hy (* out_mask);  dW_hy += s * dlogits^T hy;
     * db_y += s * sum, where hy = hs, or hd = hs * out_mask with output dropout */
    gemm(0, 0, (int)N, H, V, loss_scale, dlogits, V, W_hy, H, 0.0f, dz, H);
    gemm(1, 0, V, H, (int)N, loss_scale, dlogits, V, out_mask ? hd : hs, H, 1.0f, dW_hy, H);
    if (out_mask)
        for (int64_t i = 0; i < N * H; i++) dz[i] *= out_mask[i];
    /* db_y as a GEMV with a ones vector: one more streaming pass over the (N, V)
     * dlogits, which BLAS spreads over its threads. */
    for (int64_t n = 0; n < N; n++) ones[n] = 1.0f;
    RNN_BLAS(cblas_sgemv)(CblasRowMajor, CblasTrans, (int)N, V, loss_scale, dlogits, V,
                          ones, 1, 1.0f, db_y, 1);

    bptt(grads, dh0, dz, dz_kept, dh_next, hs, inputs, resets, in_mask, h0, params, activation,
         T, B, H, V);
    return RNN_OK;
}

/* ------------------------------------------------------------------------------------
 * one inference step
 * ---------------------------------------------------------------------------------- */

int rnn_step(float *h_out, float *logprobs, const int32_t *tokens, const float *h_in,
             const float *params, int activation, int B, int H, int V) {
    int rc = check_sizes(1, B, H, V);
    if (rc) return rc;
    if (!h_out || !logprobs || !tokens || !h_in || !params) return RNN_E_NULL;
    if (!check_activation(activation)) return RNN_E_ACTIVATION;
    if (h_out == h_in) return RNN_E_ALIAS;
    if (check_ids(tokens, B, 0, V)) return RNN_E_TOKEN;
    struct rnn_layout L = layout_of(V, H, 0);
    const float *W_hy = params + L.W_hy, *b_y = params + L.b_y;

    recurrence(h_out, params, tokens, NULL, NULL, h_in, activation, 1, B, H, V);
    output_logits(logprobs, h_out, B, W_hy, V, H);
    for (int b = 0; b < B; b++) softmax_row(logprobs + (size_t)b * V, b_y, V, -1, 0, 1);
    return RNN_OK;
}

/* ------------------------------------------------------------------------------------
 * class-factored output and direct connections (RNNME)
 *
 * A block of R rows goes through the output layer in four passes:
 *  1. class logits for all rows (one GEMM, R x C x H) and their softmax;
 *  2. the rows with a target sorted by the target's class (a stable counting sort), and
 *     their hy rows gathered in that order, so that
 *  3. each class's word logits are one GEMM over its rows (R_c x |c| x H): W_hy's rows of
 *     a class are read once per block, not once per position;
 *  4. the softmax over each row's class.
 * Backward recomputes the sort from the targets (it is cheap and deterministic), so the
 * only cached output-layer state is dclass and dword.
 * ---------------------------------------------------------------------------------- */

/* Largest table the direct connections index: 2^40 floats, as RNN_MAX_PRODUCT. */
#define RNN_MAX_TABLE RNN_MAX_PRODUCT

/* AdaGrad's eps (rnn.h): it only keeps 0 / 0 out when an entry's squares are all 0. */
#define RNN_ADAGRAD_EPS 1e-8f

/* C in [1, V] and class_start rising strictly from 0 to V; *M receives the largest class. */
static int check_classes(const int32_t *class_start, int C, int V, int *M) {
    if (C < 1 || C > V) return RNN_E_SIZE;
    if (!class_start) return RNN_E_NULL;
    if (class_start[0] != 0 || class_start[C] != V) return RNN_E_CLASS;
    int64_t largest = 0;
    for (int c = 0; c < C; c++) {
        int64_t size = (int64_t)class_start[c + 1] - class_start[c];
        if (size < 1) return RNN_E_CLASS;
        if (size > largest) largest = size;
    }
    *M = (int)largest;   /* <= V, since the sizes are positive and add up to V */
    return RNN_OK;
}

static int check_direct(const float *table, int64_t table_size, int order) {
    if (order < 0 || order > RNN_MAX_DIRECT_ORDER) return RNN_E_ARGUMENT;
    if (order == 0) return RNN_OK;
    if (!table) return RNN_E_NULL;
    if (table_size < 1 || table_size > RNN_MAX_TABLE) return RNN_E_SIZE;
    return RNN_OK;
}

/* The largest rows and classes: N * (C + M) stays within what size_t and int64_t index. */
static int check_class_sizes(int T, int B, int H, int V, int C, int M) {
    int rc = check_sizes(T, B, H, V);
    if (rc) return rc;
    if (C < 1 || C > V || M < 1 || M > V) return RNN_E_SIZE;
    return RNN_OK;
}

/* Rows per block of the scoring path (no dclass / dword): about RNN_CHUNK_FLOATS floats. */
static int64_t class_chunk_rows(int64_t N, int H, int C, int M) {
    int64_t rows = RNN_CHUNK_FLOATS / ((int64_t)C + M + H);
    if (rows < RNN_CHUNK_ROWS) rows = RNN_CHUNK_ROWS;
    return rows < N ? rows : N;
}

/* Floats for the int32 arrays of a block of R rows: the sort's permutation and each row's
 * class (R each), and the class offsets (C + 1). */
static int64_t sort_floats(int64_t R, int C) { return 2 * R + C + 1; }

int64_t rnn_class_workspace_size(int T, int B, int H, int V, int C, int M) {
    if (check_class_sizes(T, B, H, V, C, M) != RNN_OK) return -1;
    int64_t N = (int64_t)T * B;
    int64_t R = class_chunk_rows(N, H, C, M);
    int64_t train = N * H + sort_floats(N, C);                             /* gathered rows */
    int64_t score = R * ((int64_t)C + M + H) + sort_floats(R, C);          /* + the logits */
    int64_t bwd = 3 * N * H + (int64_t)B * H + N + sort_floats(N, C);      /* see backward */
    int64_t most = train > score ? train : score;
    return most > bwd ? most : bwd;
}

/* splitmix64's output function (Steele, Lea & Flood 2014): a bijection of 64-bit words
 * in which every input bit flips about half of the output bits. */
static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The hash chain's start: feature 0, the bias-like one, is mix64(RNN_DIRECT_SEED). */
#define RNN_DIRECT_SEED 0x726e6e6b6974ull   /* "rnnkit" */

/* The direct features of position (t, b): f[k] = hash of feature k mod D, for k below the
 * returned count (1 + the history's length, at most `order`). Feature k's hash is
 * mix64(hash of feature k-1 XOR x_{t-k+1}): a chain, so a feature costs one mix whatever
 * its order, and the features of different orders over the same inputs differ. The
 * history runs back from x_t until a position that resets, then (at t < 0) into `history`
 * until a -1. resets and history may be NULL (no resets; nothing before step 0). Faster-
 * rnnlm (yandex/faster-rnnlm, maxent.h) sums one prime per (order, position) instead. */
static int direct_features(uint64_t f[RNN_MAX_DIRECT_ORDER], int order, uint64_t D, int t, int b,
                           int B, const int32_t *inputs, const int32_t *resets,
                           const int32_t *history) {
    uint64_t h = mix64(RNN_DIRECT_SEED);
    f[0] = h % D;
    int count = 1;
    for (int p = t; count < order; p--) {          /* p >= t - (order - 2) >= -RNN_DIRECT_HISTORY */
        int32_t id;
        if (p >= 0) id = inputs[(size_t)p * B + b];
        else if (history) id = history[(size_t)b * RNN_DIRECT_HISTORY + RNN_DIRECT_HISTORY + p];
        else break;
        if (id < 0) break;                         /* only history holds -1: nothing before */
        h = mix64(h ^ (uint64_t)id);
        f[count++] = h % D;
        if (p >= 0 && resets && resets[(size_t)p * B + b]) break;   /* x_p starts its sequence */
    }
    return count;
}

/* What the direct features of a position are computed from (rnn.h). */
struct direct_set {
    const float *table;         /* (D,) */
    uint64_t D;
    int order;                  /* 0: none */
    const int32_t *inputs, *resets, *history;
    int B;
};

/* direct_features of row n = t * B + b; none (0) without direct connections. */
static int row_features(uint64_t f[RNN_MAX_DIRECT_ORDER], const struct direct_set *d, int64_t n) {
    if (d->order == 0) return 0;
    return direct_features(f, d->order, d->D, (int)(n / d->B), (int)(n % d->B), d->B, d->inputs,
                           d->resets, d->history);
}

/* row[j] += table[(f + o + j) mod D] for j < len and each feature f, feature by feature:
 * the direct connections of the len output units from o. Each feature's entries are one
 * run of the table, cut where it wraps around. */
static void add_direct(float *row, int len, const uint64_t *f, int count, uint64_t o,
                       const float *table, uint64_t D) {
    for (int k = 0; k < count; k++) {
        uint64_t i = (f[k] + o) % D;
        for (int j = 0; j < len; i = 0) {
            int span = D - i < (uint64_t)(len - j) ? (int)(D - i) : len - j;
            const float *w = table + i;
            for (int s = 0; s < span; s++) row[j + s] += w[s];
            j += span;
        }
    }
}

/* The sparse step of rnn.h on the entries add_direct read, in the same order, into
 * out = table: plain SGD, or with accum (not NULL) AdaGrad; or with `gradient`,
 * rnn_class_direct_gradient's accumulation into out. */
static void update_direct(float *out, const float *table, float *accum, int gradient, uint64_t D,
                          const uint64_t *f, int count, uint64_t o, const float *grad, int len,
                          float scale, float lr, float l2) {
    for (int k = 0; k < count; k++) {
        uint64_t i = (f[k] + o) % D;
        for (int j = 0; j < len; j++) {
            float w = table[i];
            float step = scale * grad[j] + l2 * w;
            if (gradient) {
                out[i] += step;
            } else if (accum) {
                accum[i] += step * step;
                out[i] = w - lr * step / sqrtf(accum[i] + RNN_ADAGRAD_EPS);
            } else {
                out[i] = w - lr * step;
            }
            if (++i == D) i = 0;
        }
    }
}

/* The direct connections' part of backward, slot by slot in dword's order (rows slots,
 * perm and cls from sort_by_class): update_direct on each slot's class and word units. */
static void direct_backward(float *out, float *accum, int gradient, const struct direct_set *d,
                            const int32_t *perm, const int32_t *cls, int64_t rows,
                            const int32_t *class_start, int C, int M, const float *dclass,
                            const float *dword, float scale, float lr, float l2) {
    uint64_t f[RNN_MAX_DIRECT_ORDER];
    for (int64_t k = 0; k < rows; k++) {
        int32_t n = perm[k];
        int c = cls[n];
        int32_t start = class_start[c];
        int count = row_features(f, d, n);
        update_direct(out, d->table, accum, gradient, d->D, f, count, 0, dclass + (size_t)n * C, C,
                      scale, lr, l2);
        update_direct(out, d->table, accum, gradient, d->D, f, count, (uint64_t)C + start,
                      dword + (size_t)k * M, class_start[c + 1] - start, scale, lr, l2);
    }
}

/* The class of word w: the c with class_start[c] <= w < class_start[c + 1]. */
static int class_of(const int32_t *class_start, int C, int32_t w) {
    int lo = 0, hi = C;                 /* class_start[lo] <= w < class_start[hi] */
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (class_start[mid] <= w) lo = mid;
        else hi = mid;
    }
    return lo;
}

/* Rows [0, R) with a target, ordered by the target's class, then by row (a stable counting
 * sort): perm[k] = the k-th row, class_rows[c] .. class_rows[c + 1] - 1 the slots of class
 * c; cls[i] = the class of row i's target, -1 without one. Returns the number of rows. */
static int64_t sort_by_class(int32_t *perm, int32_t *cls, int32_t *class_rows,
                             const int32_t *targets, int64_t R, const int32_t *class_start, int C) {
    memset(class_rows, 0, ((size_t)C + 1) * sizeof(int32_t));
    for (int64_t i = 0; i < R; i++) {
        cls[i] = targets[i] < 0 ? -1 : class_of(class_start, C, targets[i]);
        if (cls[i] >= 0) class_rows[cls[i] + 1]++;
    }
    for (int c = 0; c < C; c++) class_rows[c + 1] += class_rows[c];
    /* class_rows[c] is the next free slot of class c; afterwards the start of class c+1 */
    for (int64_t i = 0; i < R; i++)
        if (cls[i] >= 0) perm[class_rows[cls[i]]++] = (int32_t)i;
    for (int c = C; c > 0; c--) class_rows[c] = class_rows[c - 1];
    class_rows[0] = 0;
    return class_rows[C];
}

/* What the output layer of a block reads. Rows are numbered from the block's first row,
 * which is row r0 of the batch (for the direct features' positions). */
struct class_block {
    float *logprobs;            /* (R,) */
    float *logits_c;            /* (R, C): logits, then softmax - onehot or untouched */
    float *logits_w;            /* (R, M): slot k = the k-th sorted row */
    const int32_t *targets;     /* (R,) */
    const int32_t *perm, *cls;  /* (R,), from sort_by_class */
    const int32_t *class_start; /* (C + 1,) */
    const float *b_c, *b_y;
    struct direct_set direct;
    int64_t r0;
    int C, M, want_grad;
};

/* Pass 1's softmax for rows [lo, hi): log P(class) into logprobs, or its gradient. */
static void class_softmax_slice(void *ctx, int slice, int64_t lo, int64_t hi) {
    const struct class_block *j = (const struct class_block *)ctx;
    (void)slice;
    uint64_t f[RNN_MAX_DIRECT_ORDER];
    for (int64_t i = lo; i < hi; i++) {
        float *row = j->logits_c + (size_t)i * j->C;
        if (j->cls[i] < 0) {            /* no target: a zero gradient row, no score */
            if (j->want_grad) memset(row, 0, (size_t)j->C * sizeof(float));
            j->logprobs[i] = 0.0f;
            continue;
        }
        int count = row_features(f, &j->direct, j->r0 + i);
        add_direct(row, j->C, f, count, 0, j->direct.table, j->direct.D);
        j->logprobs[i] = softmax_row(row, j->b_c, j->C, j->cls[i], j->want_grad, 0);
    }
}

/* Pass 4 for slots [lo, hi): log P(word | class) added to logprobs, or its gradient. */
static void word_softmax_slice(void *ctx, int slice, int64_t lo, int64_t hi) {
    const struct class_block *j = (const struct class_block *)ctx;
    (void)slice;
    uint64_t f[RNN_MAX_DIRECT_ORDER];
    for (int64_t k = lo; k < hi; k++) {
        int32_t i = j->perm[k];
        int c = j->cls[i];
        int32_t start = j->class_start[c];
        int size = j->class_start[c + 1] - start;
        float *row = j->logits_w + (size_t)k * j->M;
        int count = row_features(f, &j->direct, j->r0 + i);
        add_direct(row, size, f, count, (uint64_t)j->C + start, j->direct.table, j->direct.D);
        j->logprobs[i] += softmax_row(row, j->b_y + start, size, j->targets[i] - start,
                                      j->want_grad, 0);
    }
}

/* The output layer of rows [r0, r0 + R): passes 1-4 above. hy: (R, H) the block's rows;
 * gathered: (R, H) scratch; perm, cls (R) and class_rows (C + 1): sort_by_class's. */
static void class_output(struct class_block *job, const float *hy, int R, float *gathered,
                         int32_t *perm, int32_t *cls, int32_t *class_rows, const float *params,
                         int H, int V) {
    struct rnn_layout L = layout_of(V, H, job->C);
    const float *W_hy = params + L.W_hy, *W_c = params + L.W_c;
    int C = job->C, M = job->M;
    const int32_t *class_start = job->class_start;

    int64_t rows = sort_by_class(perm, cls, class_rows, job->targets, R, class_start, C);
    output_logits(job->logits_c, hy, R, W_c, C, H);
    parallel_for(threads_for((int64_t)R * C, 1 << 20), R, class_softmax_slice, job);

    for (int64_t k = 0; k < rows; k++)
        memcpy(gathered + (size_t)k * H, hy + (size_t)perm[k] * H, (size_t)H * sizeof(float));
    for (int c = 0; c < C; c++) {
        int count = class_rows[c + 1] - class_rows[c];
        if (count == 0) continue;
        int32_t start = class_start[c];
        gemm(0, 1, count, class_start[c + 1] - start, H, 1.0f, gathered + (size_t)class_rows[c] * H, H,
             W_hy + (size_t)start * H, H, 0.0f, job->logits_w + (size_t)class_rows[c] * M, M);
    }
    parallel_for(threads_for(rows * M, 1 << 20), rows, word_softmax_slice, job);
}

/* The checks every class function shares: classes, direct connections, activation. */
static int check_class_call(const int32_t *class_start, int C, int V, int *M, const float *table,
                            int64_t table_size, int direct_order, int activation) {
    int rc = check_classes(class_start, C, V, M);
    if (rc) return rc;
    rc = check_direct(table, table_size, direct_order);
    if (rc) return rc;
    return check_activation(activation) ? RNN_OK : RNN_E_ACTIVATION;
}

int rnn_class_forward(float *loss, float *logprobs, float *hs, float *hd,
                      float *dclass, float *dword, float *work, int64_t work_size,
                      const int32_t *inputs, const int32_t *targets, const int32_t *resets,
                      const int32_t *history, const float *in_mask, const float *out_mask,
                      const float *h0, const float *params, const int32_t *class_start,
                      const float *table, int64_t table_size, int direct_order,
                      int activation, int T, int B, int H, int V, int C) {
    int rc = check_sizes(T, B, H, V);
    if (rc) return rc;
    int M;
    rc = check_class_call(class_start, C, V, &M, table, table_size, direct_order, activation);
    if (rc) return rc;
    if (!loss || !logprobs || !hs || !work || !inputs || !targets || !resets || !h0 || !params)
        return RNN_E_NULL;
    if (out_mask && !hd) return RNN_E_NULL;
    if (!dclass != !dword) return RNN_E_NULL;     /* both (training) or neither (scoring) */
    if (hd && hd == hs) return RNN_E_ALIAS;
    if (work_size < rnn_class_workspace_size(T, B, H, V, C, M)) return RNN_E_WORKSPACE;
    const int64_t N = (int64_t)T * B;
    rc = check_class_batch(inputs, targets, resets, history, N, B, V);
    if (rc) return rc;

    struct rnn_layout L = layout_of(V, H, C);
    recurrence(hs, params, inputs, resets, in_mask, h0, activation, T, B, H, V);
    const float *hy = output_input(hd, hs, out_mask, N * H);

    const int train = dclass != NULL;
    const int64_t chunk = train ? N : class_chunk_rows(N, H, C, M);
    for (int64_t r0 = 0; r0 < N; r0 += chunk) {
        int R = (int)(N - r0 < chunk ? N - r0 : chunk);
        float *logits_c = train ? dclass : work;
        float *logits_w = train ? dword : logits_c + (size_t)R * C;
        float *gathered = train ? work : logits_w + (size_t)R * M;
        int32_t *perm = (int32_t *)(void *)(gathered + (size_t)R * H);
        struct class_block job = {
            logprobs + r0, logits_c, logits_w, targets + r0, perm, perm + R, class_start,
            params + L.b_c, params + L.b_y,
            {table, (uint64_t)table_size, direct_order, inputs, resets, history, B},
            r0, C, M, train};
        class_output(&job, hy + (size_t)r0 * H, R, gathered, perm, perm + R, perm + 2 * R,
                     params, H, V);
    }
    double total = 0.0;
    for (int64_t n = 0; n < N; n++) total -= logprobs[n];
    *loss = (float)total;
    return RNN_OK;
}

int rnn_class_backward(float *grads, float *dh0, float *table, float *direct_accum,
                       float *work, int64_t work_size,
                       const float *dclass, const float *dword, const float *hs, const float *hd,
                       const int32_t *inputs, const int32_t *targets, const int32_t *resets,
                       const int32_t *history, const float *in_mask, const float *out_mask,
                       const float *h0, const float *params, const int32_t *class_start,
                       int64_t table_size, int direct_order, float loss_scale,
                       float direct_lr, float direct_l2,
                       int activation, int T, int B, int H, int V, int C) {
    int rc = check_sizes(T, B, H, V);
    if (rc) return rc;
    int M;
    rc = check_class_call(class_start, C, V, &M, table, table_size, direct_order, activation);
    if (rc) return rc;
    if (!grads || !dh0 || !work || !dclass || !dword || !hs || !inputs || !targets || !resets ||
        !h0 || !params)
        return RNN_E_NULL;
    if (out_mask && !hd) return RNN_E_NULL;
    if (!isfinite(loss_scale) || !isfinite(direct_lr) || direct_lr < 0.0f ||
        !isfinite(direct_l2) || direct_l2 < 0.0f)
        return RNN_E_ARGUMENT;
    if (work_size < rnn_class_workspace_size(T, B, H, V, C, M)) return RNN_E_WORKSPACE;
    if (grads == params || (table && (table == grads || table == params))) return RNN_E_ALIAS;
    if (direct_accum && (direct_accum == table || direct_accum == grads || direct_accum == params))
        return RNN_E_ALIAS;
    const int64_t N = (int64_t)T * B;
    rc = check_class_batch(inputs, targets, resets, history, N, B, V);
    if (rc) return rc;

    struct rnn_layout L = layout_of(V, H, C);
    const float *W_hy = params + L.W_hy, *W_c = params + L.W_c;
    float *dW_hy = grads + L.W_hy, *db_y = grads + L.b_y, *dW_c = grads + L.W_c, *db_c = grads + L.b_c;
    const float *hy = out_mask ? hd : hs;

    float *dz = work;                             /* (N, H): dL/dh, then dL/dz (bptt) */
    float *gathered = dz + (size_t)N * H;         /* (N, H): hy rows in slot order; bptt's dz_kept */
    float *dh_next = gathered + (size_t)N * H;    /* (B, H): bptt's */
    float *ones = dh_next + (size_t)B * H;        /* (N,): all 1, for the bias column sums */
    float *dslot = ones + N;                      /* (N, H): dL/dhy of the word part, by slot */
    int32_t *perm = (int32_t *)(void *)(dslot + (size_t)N * H);
    int32_t *cls = perm + N, *class_rows = cls + N;
    for (int64_t n = 0; n < N; n++) ones[n] = 1.0f;

    /* class part: dh = s * dclass W_c;  dW_c += s * dclass^T hy;  db_c += s * column sums */
    gemm(0, 0, (int)N, H, C, loss_scale, dclass, C, W_c, H, 0.0f, dz, H);
    gemm(1, 0, C, H, (int)N, loss_scale, dclass, C, hy, H, 1.0f, dW_c, H);
    RNN_BLAS(cblas_sgemv)(CblasRowMajor, CblasTrans, (int)N, C, loss_scale, dclass, C, ones, 1,
                          1.0f, db_c, 1);

    /* word part, class by class over its slots (the forward's sort, recomputed) */
    int64_t rows = sort_by_class(perm, cls, class_rows, targets, N, class_start, C);
    for (int64_t k = 0; k < rows; k++)
        memcpy(gathered + (size_t)k * H, hy + (size_t)perm[k] * H, (size_t)H * sizeof(float));
    for (int c = 0; c < C; c++) {
        int count = class_rows[c + 1] - class_rows[c];
        if (count == 0) continue;
        int32_t start = class_start[c];
        int size = class_start[c + 1] - start;
        const float *g = dword + (size_t)class_rows[c] * M;     /* (count, size), row stride M */
        gemm(0, 0, count, H, size, loss_scale, g, M, W_hy + (size_t)start * H, H, 0.0f,
             dslot + (size_t)class_rows[c] * H, H);
        gemm(1, 0, size, H, count, loss_scale, g, M, gathered + (size_t)class_rows[c] * H, H, 1.0f,
             dW_hy + (size_t)start * H, H);
        RNN_BLAS(cblas_sgemv)(CblasRowMajor, CblasTrans, count, size, loss_scale, g, M, ones, 1,
                              1.0f, db_y + start, 1);
    }
    for (int64_t k = 0; k < rows; k++) {
        float *to = dz + (size_t)perm[k] * H;
        const float *from = dslot + (size_t)k * H;
        for (int j = 0; j < H; j++) to[j] += from[j];
    }
    if (out_mask)
        for (int64_t i = 0; i < N * H; i++) dz[i] *= out_mask[i];

    /* direct connections: sparse SGD or AdaGrad in slot order (rnn.h), on one thread so
     * that the updates of an entry used by several positions happen in a fixed order */
    if (direct_order > 0 && direct_lr > 0.0f) {
        struct direct_set d = {table, (uint64_t)table_size, direct_order, inputs, resets, history, B};
        direct_backward(table, direct_accum, 0, &d, perm, cls, rows, class_start, C, M, dclass,
                        dword, loss_scale, direct_lr, direct_l2);
    }

    bptt(grads, dh0, dz, gathered, dh_next, hs, inputs, resets, in_mask, h0, params, activation,
         T, B, H, V);
    return RNN_OK;
}

int rnn_class_direct_gradient(float *dtable, float *work, int64_t work_size,
                              const float *dclass, const float *dword,
                              const int32_t *inputs, const int32_t *targets, const int32_t *resets,
                              const int32_t *history, const int32_t *class_start,
                              const float *table, int64_t table_size, int direct_order,
                              float loss_scale, float direct_l2, int T, int B, int H, int V, int C) {
    int rc = check_sizes(T, B, H, V);
    if (rc) return rc;
    int M;
    rc = check_classes(class_start, C, V, &M);
    if (rc) return rc;
    if (direct_order < 1) return RNN_E_ARGUMENT;
    rc = check_direct(table, table_size, direct_order);
    if (rc) return rc;
    if (!dtable || !work || !dclass || !dword || !inputs || !targets || !resets) return RNN_E_NULL;
    if (!isfinite(loss_scale) || !isfinite(direct_l2) || direct_l2 < 0.0f) return RNN_E_ARGUMENT;
    if (work_size < rnn_class_workspace_size(T, B, H, V, C, M)) return RNN_E_WORKSPACE;
    if (dtable == table) return RNN_E_ALIAS;
    const int64_t N = (int64_t)T * B;
    rc = check_class_batch(inputs, targets, resets, history, N, B, V);
    if (rc) return rc;

    int32_t *perm = (int32_t *)(void *)work;      /* sort_floats(N, C) <= the workspace */
    int32_t *cls = perm + N, *class_rows = cls + N;
    int64_t rows = sort_by_class(perm, cls, class_rows, targets, N, class_start, C);
    struct direct_set d = {table, (uint64_t)table_size, direct_order, inputs, resets, history, B};
    direct_backward(dtable, NULL, 1, &d, perm, cls, rows, class_start, C, M, dclass, dword, loss_scale,
                    0.0f, direct_l2);
    return RNN_OK;
}

/* Marks bits [i, end) of the bitmap `seen`: whole bytes at once (a run is a class's
 * units, tens to thousands of entries, marked for every feature of every position). */
static void mark_run(uint8_t *seen, uint64_t i, uint64_t end) {
    for (; i < end && (i & 7); i++) seen[i >> 3] |= (uint8_t)(1u << (i & 7));
    if (end - i >= 8) {
        memset(seen + (i >> 3), 0xFF, (size_t)((end - i) >> 3));
        i += (end - i) & ~(uint64_t)7;
    }
    for (; i < end; i++) seen[i >> 3] |= (uint8_t)(1u << (i & 7));
}

/* Marks in the bitmap `seen` the entries of len units from unit o of feature f. */
static void mark_entries(uint8_t *seen, uint64_t f, uint64_t o, int len, uint64_t D) {
    uint64_t i = (f + o) % D, n = (uint64_t)len;
    if (n >= D) {                    /* a table smaller than the run: all of it */
        mark_run(seen, 0, D);
        return;
    }
    if (n > D - i) {                 /* the run wraps around the table's end */
        mark_run(seen, 0, n - (D - i));
        n = D - i;
    }
    mark_run(seen, i, i + n);
}

int rnn_direct_entries(int64_t *entries, int64_t *count, int64_t capacity, uint8_t *seen,
                       const int32_t *inputs, const int32_t *targets, const int32_t *resets,
                       const int32_t *history, const int32_t *class_start,
                       int64_t table_size, int direct_order, int T, int B, int V, int C) {
    int rc = check_sizes(T, B, 1, V);
    if (rc) return rc;
    int M;
    rc = check_classes(class_start, C, V, &M);
    if (rc) return rc;
    if (direct_order < 1 || direct_order > RNN_MAX_DIRECT_ORDER || capacity < 0) return RNN_E_ARGUMENT;
    if (table_size < 1 || table_size > RNN_MAX_TABLE) return RNN_E_SIZE;
    if (!entries || !count || !seen || !inputs || !targets || !resets) return RNN_E_NULL;
    const int64_t N = (int64_t)T * B;
    rc = check_class_batch(inputs, targets, resets, history, N, B, V);
    if (rc) return rc;

    const uint64_t D = (uint64_t)table_size, bytes = (D + 7) / 8;
    memset(seen, 0, (size_t)bytes);
    struct direct_set d = {NULL, D, direct_order, inputs, resets, history, B};
    uint64_t f[RNN_MAX_DIRECT_ORDER];
    for (int64_t n = 0; n < N; n++) {
        if (targets[n] < 0) continue;
        int c = class_of(class_start, C, targets[n]);
        int32_t start = class_start[c];
        int features = row_features(f, &d, n);
        for (int k = 0; k < features; k++) {
            mark_entries(seen, f[k], 0, C, D);
            mark_entries(seen, f[k], (uint64_t)C + start, class_start[c + 1] - start, D);
        }
    }
    /* the marked entries in ascending order (bits past D are never marked), skipping
     * eight empty bytes at a time */
    int64_t listed = 0;
    for (uint64_t byte = 0; byte < bytes; byte++) {
        uint64_t word;
        if (!(byte & 7) && byte + 8 <= bytes && (memcpy(&word, seen + byte, 8), word == 0)) {
            byte += 7;
            continue;
        }
        for (unsigned bits = seen[byte], b = 0; bits; bits >>= 1, b++) {
            if (!(bits & 1)) continue;
            if (listed == capacity) return RNN_E_SIZE;
            entries[listed++] = (int64_t)(byte * 8 + b);
        }
    }
    *count = listed;
    return RNN_OK;
}

int rnn_class_step(float *h_out, float *class_logprobs, float *logprobs,
                   const int32_t *tokens, const int32_t *history, const float *h_in,
                   const float *params, const int32_t *class_start,
                   const float *table, int64_t table_size, int direct_order,
                   int activation, int B, int H, int V, int C) {
    int rc = check_sizes(1, B, H, V);
    if (rc) return rc;
    int M;
    rc = check_class_call(class_start, C, V, &M, table, table_size, direct_order, activation);
    if (rc) return rc;
    if (!h_out || !class_logprobs || !logprobs || !tokens || !h_in || !params) return RNN_E_NULL;
    if (h_out == h_in) return RNN_E_ALIAS;
    if (check_ids(tokens, B, 0, V)) return RNN_E_TOKEN;
    if (history && check_ids(history, (int64_t)B * RNN_DIRECT_HISTORY, -1, V)) return RNN_E_HISTORY;

    struct rnn_layout L = layout_of(V, H, C);
    const float *b_y = params + L.b_y, *b_c = params + L.b_c;
    recurrence(h_out, params, tokens, NULL, NULL, h_in, activation, 1, B, H, V);
    output_logits(class_logprobs, h_out, B, params + L.W_c, C, H);
    output_logits(logprobs, h_out, B, params + L.W_hy, V, H);
    struct direct_set d = {table, (uint64_t)table_size, direct_order, tokens, NULL, history, B};
    uint64_t f[RNN_MAX_DIRECT_ORDER];
    for (int b = 0; b < B; b++) {
        int count = row_features(f, &d, b);
        float *class_row = class_logprobs + (size_t)b * C;
        add_direct(class_row, C, f, count, 0, table, d.D);
        softmax_row(class_row, b_c, C, -1, 0, 1);
        for (int c = 0; c < C; c++) {
            int32_t start = class_start[c];
            int size = class_start[c + 1] - start;
            float *row = logprobs + (size_t)b * V + start;
            add_direct(row, size, f, count, (uint64_t)C + start, table, d.D);
            softmax_row(row, b_y + start, size, -1, 0, 1);
            for (int j = 0; j < size; j++) row[j] += class_row[c];
        }
    }
    return RNN_OK;
}

/* ------------------------------------------------------------------------------------
 * optimizers
 * ---------------------------------------------------------------------------------- */

/* Slices of the flat-buffer loops below, for parallel_for. */
struct vec_job {
    float *x;                   /* (n,) grads for clipping */
    float scale;                /* the clip factor */
    double *partial;            /* (threads,) sums of squares */
};

static void sum_squares_slice(void *ctx, int slice, int64_t lo, int64_t hi) {
    struct vec_job *job = (struct vec_job *)ctx;
    job->partial[slice] = sum_squares(job->x + lo, hi - lo);
}

static void scale_slice(void *ctx, int slice, int64_t lo, int64_t hi) {
    struct vec_job *job = (struct vec_job *)ctx;
    (void)slice;
    for (int64_t i = lo; i < hi; i++) job->x[i] *= job->scale;
}

/* One SGD or Adam step with rnn.h's weight decay and average (m == NULL: SGD). */
struct step_job {
    float *params, *m, *v, *average;
    const float *grads;
    float lr;                   /* SGD: the rate; Adam: lr / (1 - beta1^step) */
    float beta1, beta2, eps, inv_sqrt_bc2, shrink, fraction;
};

/* The decay and the average of params[lo, hi), right after the step wrote them (still in
 * cache: a second loop over the slice costs no memory traffic beyond the average's). */
static inline void decay_and_average(const struct step_job *job, int64_t lo, int64_t hi) {
    float *restrict p = job->params, *restrict a = job->average;
    const float shrink = job->shrink, fraction = job->fraction;
    for (int64_t i = lo; i < hi; i++) p[i] *= shrink;
    if (a)
        for (int64_t i = lo; i < hi; i++) {
            float d = p[i] - a[i];
            d *= fraction;
            a[i] += d;
        }
}

/* Blocks of this many floats (16 KiB) keep the decay and average passes in L1. */
#define RNN_STEP_BLOCK 4096

/* Adam's loop vectorises because the kernel is built with -fno-math-errno (a sqrtf that
 * may set errno cannot be a vector instruction; rnnkit/_build_ffi.py); IEEE sqrt and
 * division are correctly rounded in vector and scalar form alike. */
RNN_MULTIVERSION
static void step_slice(void *ctx, int slice, int64_t lo, int64_t hi) {
    const struct step_job *job = (const struct step_job *)ctx;
    float *restrict p = job->params, *restrict m = job->m, *restrict v = job->v;
    const float *restrict g = job->grads;
    const float lr = job->lr, beta1 = job->beta1, beta2 = job->beta2, eps = job->eps;
    const float inv_sqrt_bc2 = job->inv_sqrt_bc2;
    (void)slice;
    for (int64_t start = lo; start < hi; start += RNN_STEP_BLOCK) {
        int64_t end = start + RNN_STEP_BLOCK < hi ? start + RNN_STEP_BLOCK : hi;
        if (!m) {
            for (int64_t i = start; i < end; i++) p[i] -= lr * g[i];
        } else {
            /* PyTorch's arrangement: p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps) */
            for (int64_t i = start; i < end; i++) {
                m[i] = beta1 * m[i] + (1.0f - beta1) * g[i];
                v[i] = beta2 * v[i] + (1.0f - beta2) * g[i] * g[i];
                p[i] -= lr * m[i] / (sqrtf(v[i]) * inv_sqrt_bc2 + eps);
            }
        }
        decay_and_average(job, start, end);
    }
}

static int check_step(const float *params, const float *grads, float lr, float shrink,
                      float fraction, int64_t n) {
    if (!params || !grads) return RNN_E_NULL;
    if (n < 0 || n > RNN_MAX_FLAT) return RNN_E_SIZE;
    if (!isfinite(lr) || lr < 0.0f || !(shrink >= 0.0f && shrink <= 1.0f) ||
        !(fraction >= 0.0f && fraction <= 1.0f))
        return RNN_E_ARGUMENT;
    return RNN_OK;
}

static void run_step(struct step_job *job, int64_t n) {
    /* memory-bound: two cores stream faster than one */
    parallel_for(threads_for(n, 1 << 20), n, step_slice, job);
}

int rnn_sgd_update(float *params, float *average, const float *grads, float lr, float shrink,
                   float fraction, int64_t n) {
    int rc = check_step(params, grads, lr, shrink, fraction, n);
    if (rc) return rc;
    struct step_job job = {params, NULL, NULL, average, grads, lr, 0, 0, 0, 0, shrink, fraction};
    run_step(&job, n);
    return RNN_OK;
}

int rnn_sparse_sgd_update(float *params, int64_t size, const int64_t *index, const float *grads,
                          float lr, int64_t n) {
    if (!params || !index || !grads) return RNN_E_NULL;
    if (size < 0 || size > RNN_MAX_FLAT || n < 0) return RNN_E_SIZE;
    if (!isfinite(lr) || lr < 0.0f) return RNN_E_ARGUMENT;
    for (int64_t k = 0; k < n; k++)
        if (index[k] < (k ? index[k - 1] + 1 : 0) || index[k] >= size) return RNN_E_INDEX;
    for (int64_t k = 0; k < n; k++) params[index[k]] -= lr * grads[k];
    return RNN_OK;
}

int rnn_adam_update(float *params, float *m, float *v, float *average, const float *grads,
                    float lr, float beta1, float beta2, float eps, int64_t step, float shrink,
                    float fraction, int64_t n) {
    int rc = check_step(params, grads, lr, shrink, fraction, n);
    if (rc) return rc;
    if (!m || !v) return RNN_E_NULL;
    if (!(beta1 >= 0.0f && beta1 < 1.0f) || !(beta2 >= 0.0f && beta2 < 1.0f) || !(eps > 0.0f) ||
        !isfinite(eps) || step < 1)
        return RNN_E_ARGUMENT;
    double bc1 = 1.0 - pow((double)beta1, (double)step);
    double bc2 = 1.0 - pow((double)beta2, (double)step);
    struct step_job job = {params, m, v, average, grads, (float)(lr / bc1), beta1, beta2, eps,
                           (float)(1.0 / sqrt(bc2)), shrink, fraction};
    run_step(&job, n);
    return RNN_OK;
}

struct catch_up_job {
    float *average;
    const float *raw;
    const int32_t *synced;
    const int64_t *index;       /* NULL: entries lo..hi-1 themselves */
    const double *log_decay;
    int64_t step;
};

static void catch_up_slice(void *ctx, int slice, int64_t lo, int64_t hi) {
    const struct catch_up_job *job = (const struct catch_up_job *)ctx;
    const double now = job->log_decay[job->step];
    /* entries used together were mostly synced together: one exp per run of equal steps */
    int32_t last = -1;
    float weight = 0.0f;
    (void)slice;
    for (int64_t k = lo; k < hi; k++) {
        int64_t i = job->index ? job->index[k] : k;
        int32_t s = job->synced[i];
        if (s != last) {
            last = s;
            weight = (float)-expm1(now - job->log_decay[s]);   /* 1 - p, accurate for p near 1 */
        }
        float d = job->raw[i] - job->average[i];
        d *= weight;
        job->average[i] += d;
    }
}

int rnn_average_catch_up(float *average, const float *raw, const int32_t *synced, int64_t size,
                         const int64_t *index, int64_t n, const double *log_decay, int64_t steps,
                         int64_t step) {
    if (!average || !raw || !synced || !log_decay) return RNN_E_NULL;
    if (size < 0 || size > RNN_MAX_FLAT || steps < 1 || (index && n < 0)) return RNN_E_SIZE;
    if (step < 0 || step >= steps) return RNN_E_ARGUMENT;
    if (!index) n = size;
    for (int64_t k = 0; k < n; k++) {
        if (index && (index[k] < (k ? index[k - 1] + 1 : 0) || index[k] >= size)) return RNN_E_INDEX;
        int32_t s = synced[index ? index[k] : k];
        if (s < 0 || s > step) return RNN_E_ARGUMENT;
    }
    struct catch_up_job job = {average, raw, synced, index, log_decay, step};
    /* scattered reads: a window's ~400k entries of a PTB RNNME table are worth two threads */
    parallel_for(threads_for(n, 1 << 16), n, catch_up_slice, &job);
    return RNN_OK;
}

int rnn_clip_grad_norm(float *norm, float *grads, float max_norm, int64_t n) {
    if (!norm || !grads) return RNN_E_NULL;
    if (n < 0 || n > RNN_MAX_FLAT) return RNN_E_SIZE;
    if (isnan(max_norm)) return RNN_E_ARGUMENT;
    /* Per-thread partial sums over fixed contiguous slices, added in slice order:
     * deterministic for a given thread count. */
    double partial[RNN_MAX_THREADS] = {0};
    int nt = threads_for(n, 1 << 20);
    struct vec_job job = {grads, 0.0f, partial};
    parallel_for(nt, n, sum_squares_slice, &job);
    double sq = 0.0;
    for (int t = 0; t < nt; t++) sq += partial[t];
    double total = sqrt(sq);
    *norm = (float)total;
    if (!isfinite(total)) return RNN_E_NONFINITE;
    if (max_norm > 0.0f && total > max_norm) {
        job.scale = (float)(max_norm / (total + 1e-6));
        parallel_for(nt, n, scale_slice, &job);
    }
    return RNN_OK;
}
