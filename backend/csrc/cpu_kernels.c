/* CPU kernels for decode-sized work, where general-purpose libraries leave memory bandwidth unused.
 *
 * skinny_matmul: y[M, N] = x[M, K] @ w[N, K]^T for a few input rows M (decode at small batch).
 * Such a product is bound by reading w once; oneDNN's fp32 path streams a [N, K] weight at
 * 60-75% of the bandwidth a plain read reaches on the CPUs measured. Here each thread takes one
 * contiguous block of weight rows and reads it front to back, each weight vector loaded once and
 * used for all M inputs.
 *
 * Written with GCC vector extensions rather than intrinsics: compiled with -march=native, a
 * 16-float vector becomes one AVX-512 register or two AVX2 ones.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef float vec __attribute__((vector_size(64)));
#define LANES 16

static inline vec load(const float *p) { vec v; memcpy(&v, p, sizeof v); return v; }

typedef int32_t ivec __attribute__((vector_size(64)));
typedef float half_vec __attribute__((vector_size(32)));
typedef float quarter_vec __attribute__((vector_size(16)));

static inline float hsum(vec v) {
    half_vec h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                 __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    quarter_vec q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
    return (q[0] + q[2]) + (q[1] + q[3]);
}

/* One weight row against M input rows (y entries n_dim apart), U vectors of the row per iteration
 * so that U * M accumulators hide the FMA latency. A thread walks its rows one after another: its
 * whole block of weights is then one sequential stream, which the hardware prefetcher follows at
 * full speed (walking four rows side by side, as four streams of a few KB each, was 20% slower). */
#define ROW(M, U)                                                                                     \
    static void row_##M(const float *w, const float *x, float *y, int64_t k_dim, int64_t n_dim) {     \
        vec acc[U][M];                                                                                \
        for (int u = 0; u < U; u++)                                                                   \
            for (int m = 0; m < M; m++) acc[u][m] = (vec){0};                                         \
        int64_t k = 0;                                                                                \
        for (; k + U * LANES <= k_dim; k += U * LANES)                                                \
            for (int u = 0; u < U; u++) {                                                             \
                const vec wv = load(w + k + u * LANES);                                               \
                for (int m = 0; m < M; m++) acc[u][m] += wv * load(x + m * k_dim + k + u * LANES);    \
            }                                                                                         \
        for (; k + LANES <= k_dim; k += LANES) {                                                      \
            const vec wv = load(w + k);                                                               \
            for (int m = 0; m < M; m++) acc[0][m] += wv * load(x + m * k_dim + k);                    \
        }                                                                                             \
        for (int m = 0; m < M; m++) {                                                                 \
            for (int u = 1; u < U; u++) acc[0][m] += acc[u][m];                                       \
            float s = hsum(acc[0][m]);                                                                \
            for (int64_t j = k; j < k_dim; j++) s += w[j] * x[m * k_dim + j];                         \
            y[m * n_dim] = s;                                                                         \
        }                                                                                             \
    }

ROW(1, 4) ROW(2, 2) ROW(3, 2) ROW(4, 1)

typedef void (*row_fn)(const float *, const float *, float *, int64_t, int64_t);
#define MAX_ROWS 4
static const row_fn ROWS[MAX_ROWS + 1] = {0, row_1, row_2, row_3, row_4};

int skinny_matmul_max_rows(void) { return MAX_ROWS; }

/* Returns 0, or -1 when m_dim is outside 1..MAX_ROWS (nothing is written then). */
int skinny_matmul(const float *w, const float *x, float *y, int64_t m_dim, int64_t n_dim, int64_t k_dim,
                  int threads) {
    if (m_dim < 1 || m_dim > MAX_ROWS) return -1;
    const row_fn row = ROWS[m_dim];
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int64_t t = 0, nt = 1;
#ifdef _OPENMP
        t = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        /* one contiguous block of rows per thread, in whole cache lines of y */
        int64_t per = ((n_dim + nt - 1) / nt + LANES - 1) / LANES * LANES;
        int64_t lo = t * per, hi = lo + per < n_dim ? lo + per : n_dim;
        for (int64_t n = lo; n < hi; n++) row(w + n * k_dim, x, y + n, k_dim, n_dim);
    }
    return 0;
}

/* paged_decode_attention: one new query token per sequence against its cached keys and values,
 * read in place from the paged cache (no gathered copy, no padding to the longest sequence).
 *
 * q [batch, q_row_stride] holding [heads, head_dim] per row; out [batch, heads, head_dim];
 * k_cache, v_cache one layer's [num_blocks, block_size, kv_heads, head_dim]; block_tables
 * [batch, table_width]; lengths [batch] (keys per sequence, the new token's included).
 * Work is split over (sequence, kv head) pairs; each pair reads its keys and values once for
 * all the query heads that share them (grouped-query attention). Softmax in two passes over a
 * scores buffer, as a decode step's context fits in cache.
 * Returns 0; -1 if a buffer could not be allocated, -2 for a head_dim that is not a multiple of 16 or
 * heads not a multiple of kv_heads, -3 for a length or block id outside the table or the cache.
 */
/* dot product; n a multiple of LANES */
static inline float dot(const float *a, const float *b, int64_t n) {
    vec acc = {0};
    for (int64_t i = 0; i < n; i += LANES) acc += load(a + i) * load(b + i);
    return hsum(acc);
}

/* e^x for x <= 0 (softmax after subtracting the max), 16 at a time: 2^n * p(r) with x = n ln2 + r,
 * |r| <= ln2/2, p a degree-6 Taylor polynomial (relative error under 2e-7); x below -87 gives ~0. */
/* mask ? a : b, lane by lane (C has no vector ?:) */
static inline vec where(ivec mask, vec a, vec b) {
    ivec ai, bi;
    memcpy(&ai, &a, sizeof a);
    memcpy(&bi, &b, sizeof b);
    ai = (ai & mask) | (bi & ~mask);
    memcpy(&a, &ai, sizeof a);
    return a;
}

static inline vec exp_nonpositive(vec x) {
    const vec lo = (vec){0} - 87.0f;
    x = where(x < lo, lo, x);
    /* n = round(x / ln2): truncation of n - 0.5 rounds a non-positive n to nearest */
    vec n = __builtin_convertvector(__builtin_convertvector(x * 1.44269504088896341f - 0.5f, ivec), vec);
    vec r = x - n * 0.693359375f + n * 2.12194440e-4f;
    vec p = (vec){0} + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    ivec bits = (__builtin_convertvector(n, ivec) + 127) << 23;
    vec scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* A head's keys are 1/kv_heads of each slot, so consecutive tokens are a slot apart: a stride the
 * hardware prefetcher follows poorly. Asking for the row a few tokens ahead hides the latency. */
#define PREFETCH_TOKENS 8

static inline int64_t slot(const int64_t *table, int64_t t, int64_t block_size) {
    return table[t / block_size] * block_size + t % block_size;
}

static inline void prefetch_row(const float *p, int64_t n) {
    for (int64_t i = 0; i < n; i += LANES) __builtin_prefetch(p + i, 0, 3);
}

int paged_decode_attention(const float *q, int64_t q_row_stride, const float *k_cache, const float *v_cache,
                           const int64_t *block_tables, int64_t table_width, const int64_t *lengths, float *out,
                           int64_t batch, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t block_size,
                           int64_t num_blocks, float scale, int threads) {
    if (head_dim % LANES || heads % kv_heads) return -2;
    for (int64_t b = 0; b < batch; b++) { /* never read outside the cache */
        if (lengths[b] < 1 || lengths[b] > table_width * block_size) return -3;
        for (int64_t i = 0; i < (lengths[b] + block_size - 1) / block_size; i++)
            if (block_tables[b * table_width + i] < 0 || block_tables[b * table_width + i] >= num_blocks) return -3;
    }
    const int64_t group = heads / kv_heads, slot_stride = kv_heads * head_dim;
    int failed = 0;
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t b = 0; b < batch; b++) {
        for (int64_t g = 0; g < kv_heads; g++) {
            const int64_t len = lengths[b], padded = (len + LANES - 1) / LANES * LANES;
            const int64_t *table = block_tables + b * table_width;
            float *scores = aligned_alloc(64, sizeof(float) * group * (padded > 0 ? padded : LANES));
            if (scores == NULL) {
#pragma omp atomic write
                failed = 1;
                continue;
            }
            const float *qg = q + b * q_row_stride + g * group * head_dim;
            float *og = out + (b * heads + g * group) * head_dim;
            /* scores = q . k * scale, each key read once for the group's query heads */
            for (int64_t t = 0; t < len; t++) {
                const float *key = k_cache + slot(table, t, block_size) * slot_stride + g * head_dim;
                if (t + PREFETCH_TOKENS < len)
                    prefetch_row(k_cache + slot(table, t + PREFETCH_TOKENS, block_size) * slot_stride + g * head_dim,
                                 head_dim);
                for (int64_t h = 0; h < group; h++) scores[h * padded + t] = dot(qg + h * head_dim, key, head_dim) * scale;
            }
            /* softmax per head, over a row padded to whole vectors */
            for (int64_t h = 0; h < group; h++) {
                float *row = scores + h * padded, max = -INFINITY;
                for (int64_t t = 0; t < len; t++) max = row[t] > max ? row[t] : max;
                for (int64_t t = len; t < padded; t++) row[t] = -INFINITY;
                vec sum = {0};
                for (int64_t t = 0; t < padded; t += LANES) {
                    vec e = exp_nonpositive(load(row + t) - max); /* padding: e^-87, nothing against the max's 1 */
                    memcpy(row + t, &e, sizeof e);
                    sum += e;
                }
                const float inv = 1.0f / hsum(sum);
                for (int64_t t = 0; t < len; t++) row[t] *= inv;
            }
            /* out = probabilities . v, each value read once */
            memset(og, 0, sizeof(float) * group * head_dim);
            for (int64_t t = 0; t < len; t++) {
                const float *value = v_cache + slot(table, t, block_size) * slot_stride + g * head_dim;
                if (t + PREFETCH_TOKENS < len)
                    prefetch_row(v_cache + slot(table, t + PREFETCH_TOKENS, block_size) * slot_stride + g * head_dim,
                                 head_dim);
                for (int64_t h = 0; h < group; h++) {
                    const vec p = (vec){0} + scores[h * padded + t];
                    float *o = og + h * head_dim;
                    for (int64_t i = 0; i < head_dim; i += LANES) {
                        vec acc = load(o + i) + p * load(value + i);
                        memcpy(o + i, &acc, sizeof acc);
                    }
                }
            }
            free(scores);
        }
    }
    return failed ? -1 : 0;
}

/* add_rms_norm: for each row, residual += delta (when delta is not NULL), then
 * out = residual / sqrt(mean(residual^2) + eps) * weight. One pass where torch runs six ops.
 * Rows are split across threads only when there are enough of them to pay for it. */
void add_rms_norm(float *out, float *residual, const float *delta, const float *weight, int64_t rows, int64_t dim,
                  float eps, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && rows * dim >= 65536)
    for (int64_t r = 0; r < rows; r++) {
        float *x = residual + r * dim, *y = out + r * dim;
        float ss = 0;
        if (delta != NULL) {
            const float *d = delta + r * dim;
#pragma omp simd reduction(+ : ss)
            for (int64_t i = 0; i < dim; i++) {
                x[i] += d[i];
                ss += x[i] * x[i];
            }
        } else {
#pragma omp simd reduction(+ : ss)
            for (int64_t i = 0; i < dim; i++) ss += x[i] * x[i];
        }
        const float inv = 1.0f / sqrtf(ss / (float)dim + eps);
#pragma omp simd
        for (int64_t i = 0; i < dim; i++) y[i] = x[i] * inv * weight[i];
    }
}

/* rope_and_cache: rotary embeddings applied in place to the q and k parts of each new token's
 * fused projection, then k and v stored in their cache slots; where torch needs a gather of the
 * tables, two multiplies, a roll and two index copies per layer.
 * qkv [tokens, row_stride]: heads * head_dim of q, kv_heads * head_dim of k, then of v.
 * cos, sin [max_positions, head_dim], rotate-half convention with the sign folded into sin:
 * x' = x * cos + roll(x, head_dim / 2) * sin. Caches are [num_slots, kv_heads, head_dim].
 * Returns 0, or -3 (nothing written) for a slot or position out of range. */
int rope_and_cache(float *qkv, int64_t row_stride, int64_t tokens, const int64_t *positions, const float *cos,
                    const float *sin, int64_t max_positions, const int64_t *slots, float *k_cache, float *v_cache,
                    int64_t num_slots, int64_t heads, int64_t kv_heads, int64_t head_dim, int threads) {
    const int64_t half = head_dim / 2, kv_width = kv_heads * head_dim;
    for (int64_t t = 0; t < tokens; t++) /* never write outside the cache */
        if (slots[t] < 0 || slots[t] >= num_slots || positions[t] < 0 || positions[t] >= max_positions) return -3;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && tokens >= 64)
    for (int64_t t = 0; t < tokens; t++) {
        float *row = qkv + t * row_stride, tmp[head_dim];
        const float *c = cos + positions[t] * head_dim, *s = sin + positions[t] * head_dim;
        for (int64_t h = 0; h < heads + kv_heads; h++) {
            float *x = row + h * head_dim;
            memcpy(tmp, x, sizeof tmp);
#pragma omp simd
            for (int64_t i = 0; i < half; i++) x[i] = tmp[i] * c[i] + tmp[i + half] * s[i];
#pragma omp simd
            for (int64_t i = half; i < head_dim; i++) x[i] = tmp[i] * c[i] + tmp[i - half] * s[i];
        }
        memcpy(k_cache + slots[t] * kv_width, row + heads * head_dim, sizeof(float) * kv_width);
        memcpy(v_cache + slots[t] * kv_width, row + (heads + kv_heads) * head_dim, sizeof(float) * kv_width);
    }
    return 0;
}

/* silu_mul: out[t] = silu(gate) * up for rows [gate | up] of width 2 * n, where torch runs a chunk,
 * a silu and a multiply. silu(x) = x * sigmoid(x), with sigmoid from e^-|x| (never overflows). */
void silu_mul(const float *gate_up, float *out, int64_t rows, int64_t n, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && rows * n >= 65536)
    for (int64_t r = 0; r < rows; r++) {
        const float *gate = gate_up + r * 2 * n, *up = gate + n;
        float *o = out + r * n;
        int64_t i = 0;
        for (; i + LANES <= n; i += LANES) {
            const vec x = load(gate + i);
            const vec e = exp_nonpositive(where(x < 0, x, -x)), inv = 1.0f / (1.0f + e);
            const vec sig = where(x < 0, e * inv, inv); /* sigmoid(x): 1/(1+e^-x), or e^x/(1+e^x) below 0 */
            vec y = x * sig * load(up + i);
            memcpy(o + i, &y, sizeof y);
        }
        for (; i < n; i++) o[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
    }
}
