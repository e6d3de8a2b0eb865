/* CPU kernels for decode-sized work, where general-purpose libraries leave memory bandwidth unused
 * and per-op overheads add up.
 *
 * A decode step at small batch reads every weight once and does little else. oneDNN's fp32 path
 * streams a [N, K] weight at 60-75% of the bandwidth a plain read reaches on the CPUs measured,
 * and torch spends some 25 small ops per layer around the matmuls (rotary, cache writes, a padded
 * gather for attention, norms, SiLU). Here:
 *
 *   skinny_matmul           y = x @ w^T for 1-32 rows of x: up to 4, weights read as one stream per
 *                           thread; beyond, register tiles of 8 weight rows by 2 inputs
 *   paged_decode_attention  one query per sequence against its paged keys and values, in place
 *   add_rms_norm            residual += delta, then RMSNorm
 *   rope_and_cache          rotary on q and k in place, k and v stored in their cache slots
 *   silu_mul                silu(gate) * up
 *   decode_layer            a whole Llama decoder layer for 1-32 decoding sequences: the above in
 *                           one call and one thread team, phases separated by barriers
 *
 * Written with GCC vector extensions rather than intrinsics: compiled with -march=native, a
 * 16-float vector becomes one AVX-512 register or two AVX2 ones. Every function that indexes the
 * cache checks its block ids, slots and positions first and returns an error code instead of
 * reading or writing out of bounds.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LANES 16
#define STREAM_ROWS 4 /* up to here a matmul is bound by reading the weights once */
#define MAX_ROWS 32    /* up to here the tiled kernel beats oneDNN's small-M sgemm */
/* A head's keys are 1/kv_heads of each cache slot, so consecutive tokens are a slot apart: a
 * stride the hardware prefetcher follows poorly. Asking for the row a few tokens ahead hides it. */
#define PREFETCH_TOKENS 8

enum { OK = 0, ERR_ALLOC = -1, ERR_SHAPE = -2, ERR_RANGE = -3 };

typedef float vec __attribute__((vector_size(64)));
typedef int32_t ivec __attribute__((vector_size(64)));
typedef float half_vec __attribute__((vector_size(32)));
typedef float quarter_vec __attribute__((vector_size(16)));

/* ---- vector helpers ------------------------------------------------------------------------- */

static inline vec load(const float *p) { vec v; memcpy(&v, p, sizeof v); return v; }
static inline void store(float *p, vec v) { memcpy(p, &v, sizeof v); }

static inline float hsum(vec v) {
    half_vec h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                 __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    quarter_vec q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
    return (q[0] + q[2]) + (q[1] + q[3]);
}

/* mask ? a : b, lane by lane (C has no vector ?:) */
static inline vec where(ivec mask, vec a, vec b) {
    ivec ai, bi;
    memcpy(&ai, &a, sizeof a);
    memcpy(&bi, &b, sizeof b);
    ai = (ai & mask) | (bi & ~mask);
    memcpy(&a, &ai, sizeof a);
    return a;
}

/* e^x for x <= 0, 16 at a time: 2^n * p(r) with x = n ln2 + r, |r| <= ln2/2, p a degree-6 Taylor
 * polynomial (relative error under 2e-7); x below -87 gives about 1e-38. */
static inline vec exp_nonpositive(vec x) {
    const vec lo = (vec){0} - 87.0f;
    x = where(x < lo, lo, x);
    /* n = round(x / ln2): truncating n - 0.5 rounds a non-positive n to nearest */
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

/* dot product; n a multiple of LANES */
static inline float dot(const float *a, const float *b, int64_t n) {
    vec acc = {0};
    for (int64_t i = 0; i < n; i += LANES) acc += load(a + i) * load(b + i);
    return hsum(acc);
}

/* ---- skinny matmul -------------------------------------------------------------------------- */

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
static const row_fn ROWS[STREAM_ROWS + 1] = {0, row_1, row_2, row_3, row_4};

/* R weight rows against MB input rows: R * MB accumulators, each weight vector loaded once per
 * MB inputs and each input vector once per R weights. Past STREAM_ROWS inputs the product is
 * bound by the FMAs, not by reading the weights: 8 weight rows (24 KB at K = 768, kept in L1
 * while the inputs go by in pairs) by 2 inputs beat oneDNN's fp32 sgemm by 1.2-1.5x at 8-32
 * rows here (4 x 4, 2 x 8, 8 x 4 and 16 x 1 tiles were slower: fewer reuses, or spilled
 * registers). */
#define TILE(R, MB)                                                                                    \
    static void tile_##R##x##MB(const float *w, const float *x, float *y, int64_t k_dim, int64_t n_dim) { \
        vec acc[R][MB];                                                                                \
        for (int r = 0; r < R; r++)                                                                    \
            for (int m = 0; m < MB; m++) acc[r][m] = (vec){0};                                         \
        int64_t k = 0;                                                                                 \
        for (; k + LANES <= k_dim; k += LANES) {                                                       \
            vec xv[MB];                                                                                \
            for (int m = 0; m < MB; m++) xv[m] = load(x + m * k_dim + k);                              \
            for (int r = 0; r < R; r++) {                                                              \
                const vec wv = load(w + r * k_dim + k);                                                \
                for (int m = 0; m < MB; m++) acc[r][m] += wv * xv[m];                                  \
            }                                                                                          \
        }                                                                                              \
        for (int r = 0; r < R; r++)                                                                    \
            for (int m = 0; m < MB; m++) {                                                             \
                float s = hsum(acc[r][m]);                                                             \
                for (int64_t j = k; j < k_dim; j++) s += w[r * k_dim + j] * x[m * k_dim + j];         \
                y[m * n_dim + r] = s;                                                                  \
            }                                                                                          \
    }

TILE(8, 2) TILE(8, 1) TILE(1, 2) TILE(1, 1)

/* The rows shared out over the current team. Guided scheduling hands out long contiguous runs
 * (half the rows, then a quarter, ...), so each thread still streams long sequential stretches,
 * and a thread slowed by a neighbour on a shared machine is made up for by the others instead of
 * holding up the barrier at the end (5% faster than equal halves on two shared cores). */
static void matmul_rows(const float *w, const float *x, float *y, int64_t m_dim, int64_t n_dim, int64_t k_dim) {
    if (m_dim <= STREAM_ROWS) {
        const row_fn row = ROWS[m_dim];
#pragma omp for schedule(guided, LANES)
        for (int64_t n = 0; n < n_dim; n++) row(w + n * k_dim, x, y + n, k_dim, n_dim);
        return;
    }
    const int64_t groups = (n_dim + 7) / 8;
#pragma omp for schedule(guided, 2)
    for (int64_t g = 0; g < groups; g++) {
        const int64_t n = g * 8;
        for (int64_t m = 0; m < m_dim; m += 2) {
            const float *xm = x + m * k_dim;
            float *ym = y + m * n_dim + n;
            const int pair = m + 1 < m_dim;
            if (n + 8 <= n_dim) {
                (pair ? tile_8x2 : tile_8x1)(w + n * k_dim, xm, ym, k_dim, n_dim);
            } else {
                for (int64_t r = n; r < n_dim; r++) (pair ? tile_1x2 : tile_1x1)(w + r * k_dim, xm, ym + (r - n), k_dim, n_dim);
            }
        }
    }
}

int skinny_matmul_max_rows(void) { return MAX_ROWS; }
int skinny_matmul_stream_rows(void) { return STREAM_ROWS; }

/* y[M, N] = x[M, K] @ w[N, K]^T. Returns ERR_SHAPE (nothing written) unless 1 <= M <= MAX_ROWS. */
int skinny_matmul(const float *w, const float *x, float *y, int64_t m_dim, int64_t n_dim, int64_t k_dim,
                  int threads) {
    if (m_dim < 1 || m_dim > MAX_ROWS) return ERR_SHAPE;
#pragma omp parallel num_threads(threads) if (threads > 1)
    matmul_rows(w, x, y, m_dim, n_dim, k_dim);
    return OK;
}

/* ---- paged decode attention ----------------------------------------------------------------- */

typedef struct {
    const float *k_cache, *v_cache; /* one layer: [num_blocks, block_size, kv_heads, head_dim] */
    const int64_t *block_tables;    /* [batch, table_width] */
    const int64_t *lengths;         /* [batch]: keys per sequence, the new token's included */
    int64_t table_width, block_size, num_blocks, heads, kv_heads, head_dim;
} Paged;

static int check_paged(const Paged *p, int64_t batch) {
    if (p->head_dim % LANES || p->heads % p->kv_heads) return ERR_SHAPE;
    for (int64_t b = 0; b < batch; b++) {
        const int64_t len = p->lengths[b], *table = p->block_tables + b * p->table_width;
        if (len < 1 || len > p->table_width * p->block_size) return ERR_RANGE;
        for (int64_t i = 0; i < (len + p->block_size - 1) / p->block_size; i++)
            if (table[i] < 0 || table[i] >= p->num_blocks) return ERR_RANGE;
    }
    return OK;
}

static inline int64_t slot_of(const int64_t *table, int64_t t, int64_t block_size) {
    return table[t / block_size] * block_size + t % block_size;
}

static inline void prefetch_row(const float *p, int64_t n) {
    for (int64_t i = 0; i < n; i += LANES) __builtin_prefetch(p + i, 0, 3);
}

/* Sequence b, kv head g: the group of query heads sharing it, at qg, written to og. Each key and
 * value is read once for the whole group; softmax in two passes over a scores buffer (a decode
 * step's context fits in cache). */
static int attend(const Paged *p, int64_t b, int64_t g, const float *qg, float *og, float scale) {
    const int64_t group = p->heads / p->kv_heads, d = p->head_dim, stride = p->kv_heads * d;
    const int64_t len = p->lengths[b], padded = (len + LANES - 1) / LANES * LANES;
    const int64_t *table = p->block_tables + b * p->table_width;
    const float *keys = p->k_cache + g * d, *values = p->v_cache + g * d;
    float *scores = aligned_alloc(64, sizeof(float) * group * padded);
    if (scores == NULL) return ERR_ALLOC;
    for (int64_t t = 0; t < len; t++) {
        if (t + PREFETCH_TOKENS < len) prefetch_row(keys + slot_of(table, t + PREFETCH_TOKENS, p->block_size) * stride, d);
        const float *key = keys + slot_of(table, t, p->block_size) * stride;
        for (int64_t h = 0; h < group; h++) scores[h * padded + t] = dot(qg + h * d, key, d) * scale;
    }
    for (int64_t h = 0; h < group; h++) { /* softmax over a row padded to whole vectors */
        float *row = scores + h * padded, max = -INFINITY;
        for (int64_t t = 0; t < len; t++) max = row[t] > max ? row[t] : max;
        for (int64_t t = len; t < padded; t++) row[t] = -INFINITY; /* becomes e^-87: nothing next to 1 */
        vec sum = {0};
        for (int64_t t = 0; t < padded; t += LANES) {
            const vec e = exp_nonpositive(load(row + t) - max);
            store(row + t, e);
            sum += e;
        }
        const float inv = 1.0f / hsum(sum);
        for (int64_t t = 0; t < len; t++) row[t] *= inv;
    }
    memset(og, 0, sizeof(float) * group * d);
    for (int64_t t = 0; t < len; t++) {
        if (t + PREFETCH_TOKENS < len) prefetch_row(values + slot_of(table, t + PREFETCH_TOKENS, p->block_size) * stride, d);
        const float *value = values + slot_of(table, t, p->block_size) * stride;
        for (int64_t h = 0; h < group; h++) {
            const vec w = (vec){0} + scores[h * padded + t];
            for (int64_t i = 0; i < d; i += LANES) store(og + h * d + i, load(og + h * d + i) + w * load(value + i));
        }
    }
    free(scores);
    return OK;
}

/* All (sequence, kv head) pairs, shared out over the current team; returns ERR_ALLOC if any failed. */
static int attend_all(const Paged *p, const float *q, int64_t q_row_stride, float *out, int64_t batch) {
    const int64_t group = p->heads / p->kv_heads, d = p->head_dim;
    const float scale = 1.0f / sqrtf((float)d);
    int failed = 0;
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < batch; b++)
        for (int64_t g = 0; g < p->kv_heads; g++)
            if (attend(p, b, g, q + b * q_row_stride + g * group * d, out + (b * p->heads + g * group) * d, scale))
#pragma omp atomic write
                failed = 1;
    return failed ? ERR_ALLOC : OK;
}

/* q [batch, q_row_stride] holding [heads, head_dim] per row; out [batch, heads, head_dim].
 * Returns OK, ERR_ALLOC, ERR_SHAPE (head_dim not a multiple of 16, or heads of kv_heads) or
 * ERR_RANGE (a length or block id outside the table or the cache). */
int paged_decode_attention(const float *q, int64_t q_row_stride, const float *k_cache, const float *v_cache,
                           const int64_t *block_tables, int64_t table_width, const int64_t *lengths, float *out,
                           int64_t batch, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t block_size,
                           int64_t num_blocks, int threads) {
    const Paged p = {k_cache, v_cache, block_tables, lengths, table_width, block_size, num_blocks,
                     heads, kv_heads, head_dim};
    const int checked = check_paged(&p, batch);
    if (checked) return checked;
    int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        if (attend_all(&p, q, q_row_stride, out, batch))
#pragma omp atomic write
            failed = 1;
    }
    return failed ? ERR_ALLOC : OK;
}

/* ---- norms, rotary, activation -------------------------------------------------------------- */

/* x += delta (unless NULL), then y = x / sqrt(mean(x^2) + eps) * weight */
static void rms_row(float *y, float *x, const float *delta, const float *weight, int64_t dim, float eps) {
    float ss = 0;
    if (delta != NULL) {
#pragma omp simd reduction(+ : ss)
        for (int64_t i = 0; i < dim; i++) {
            x[i] += delta[i];
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

/* For each row: residual += delta (when delta is not NULL), then out = RMSNorm(residual) * weight.
 * Rows are shared out only when there are enough of them to pay for a thread team. */
void add_rms_norm(float *out, float *residual, const float *delta, const float *weight, int64_t rows, int64_t dim,
                  float eps, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && rows * dim >= 65536)
    for (int64_t r = 0; r < rows; r++)
        rms_row(out + r * dim, residual + r * dim, delta == NULL ? NULL : delta + r * dim, weight, dim, eps);
}

typedef struct {
    const int64_t *positions, *slots; /* [tokens] */
    const float *cos, *sin;           /* [max_positions, head_dim], sign folded into sin */
    float *k_cache, *v_cache;         /* one layer: [num_slots, kv_heads, head_dim] */
    int64_t max_positions, num_slots, heads, kv_heads, head_dim;
} Rotary;

static int check_rotary(const Rotary *r, int64_t tokens) {
    if (r->head_dim % 2) return ERR_SHAPE;
    for (int64_t t = 0; t < tokens; t++)
        if (r->slots[t] < 0 || r->slots[t] >= r->num_slots || r->positions[t] < 0 ||
            r->positions[t] >= r->max_positions)
            return ERR_RANGE;
    return OK;
}

/* Token t's row [q heads | k heads | v heads]: rotate q and k in place (rotate-half convention,
 * x' = x * cos + roll(x, head_dim / 2) * sin), then store k and v in the token's cache slot. */
static void rope_token(const Rotary *r, float *row, int64_t t) {
    const int64_t d = r->head_dim, half = d / 2, kv_width = r->kv_heads * d;
    const float *c = r->cos + r->positions[t] * d, *s = r->sin + r->positions[t] * d;
    float tmp[d];
    for (int64_t h = 0; h < r->heads + r->kv_heads; h++) {
        float *x = row + h * d;
        memcpy(tmp, x, sizeof tmp);
#pragma omp simd
        for (int64_t i = 0; i < half; i++) x[i] = tmp[i] * c[i] + tmp[i + half] * s[i];
#pragma omp simd
        for (int64_t i = half; i < d; i++) x[i] = tmp[i] * c[i] + tmp[i - half] * s[i];
    }
    memcpy(r->k_cache + r->slots[t] * kv_width, row + r->heads * d, sizeof(float) * kv_width);
    memcpy(r->v_cache + r->slots[t] * kv_width, row + (r->heads + r->kv_heads) * d, sizeof(float) * kv_width);
}

/* qkv [tokens, row_stride]. Returns OK, ERR_SHAPE (odd head_dim) or ERR_RANGE (a slot or position
 * out of range; nothing written). */
int rope_and_cache(float *qkv, int64_t row_stride, int64_t tokens, const int64_t *positions, const float *cos,
                   const float *sin, int64_t max_positions, const int64_t *slots, float *k_cache, float *v_cache,
                   int64_t num_slots, int64_t heads, int64_t kv_heads, int64_t head_dim, int threads) {
    const Rotary r = {positions, slots, cos, sin, k_cache, v_cache, max_positions, num_slots, heads, kv_heads, head_dim};
    const int checked = check_rotary(&r, tokens);
    if (checked) return checked;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && tokens >= 64)
    for (int64_t t = 0; t < tokens; t++) rope_token(&r, qkv + t * row_stride, t);
    return OK;
}

/* out = silu(gate) * up over n columns; silu(x) = x * sigmoid(x), sigmoid from e^-|x| (no overflow) */
static void silu_mul_row(const float *gate, const float *up, float *out, int64_t n) {
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        const vec x = load(gate + i);
        const vec e = exp_nonpositive(where(x < 0, x, -x)), inv = 1.0f / (1.0f + e);
        store(out + i, x * where(x < 0, e * inv, inv) * load(up + i)); /* e^x/(1+e^x) below 0 */
    }
    for (; i < n; i++) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

/* gate_up rows [gate | up] of width 2n; out [rows, n] */
void silu_mul(const float *gate_up, float *out, int64_t rows, int64_t n, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && rows * n >= 65536)
    for (int64_t r = 0; r < rows; r++) silu_mul_row(gate_up + r * 2 * n, gate_up + r * 2 * n + n, out + r * n, n);
}

/* ---- a whole decoder layer ------------------------------------------------------------------ */

/* One Llama decoder layer for `batch` (1 to MAX_ROWS) sequences decoding one token each, x
 * [batch, hidden] being the residual stream, updated in place:
 *
 *   h = RMSNorm(x) ; qkv = h W_qkv^T (+ b_qkv) ; rotary, store k and v ; a = attention(q) ;
 *   x += a W_o^T ; h = RMSNorm(x) ; x += (silu(h W_gate^T) * h W_up^T) W_down^T
 *
 * One thread team for the whole layer: the matmuls split their weight rows over it, attention its
 * (sequence, kv head) pairs and the small steps their sequences, with a barrier after each phase.
 * Against the same kernels called one by one from Python, this saves the interpreter and a team
 * start per op, some 40 µs a layer. Returns the codes of paged_decode_attention and rope_and_cache;
 * nothing is written when the inputs are refused. */
int decode_layer(float *x, int64_t batch,
                 /* the layer */
                 int64_t hidden, const float *input_norm, const float *w_qkv, const float *b_qkv, const float *w_o,
                 const float *post_norm, const float *w_gate_up, const float *w_down, int64_t intermediate, float eps,
                 int64_t heads, int64_t kv_heads, int64_t head_dim,
                 /* the step */
                 const int64_t *positions, const float *cos, const float *sin, int64_t max_positions,
                 const int64_t *slots, const int64_t *block_tables, int64_t table_width, const int64_t *lengths,
                 int64_t num_blocks, int64_t block_size,
                 /* the layer's cache */
                 float *k_cache, float *v_cache, int threads) {
    if (batch < 1 || batch > MAX_ROWS) return ERR_SHAPE;
    const Paged p = {k_cache, v_cache, block_tables, lengths, table_width, block_size, num_blocks,
                     heads, kv_heads, head_dim};
    const Rotary r = {positions, slots, cos, sin, k_cache, v_cache, max_positions, num_blocks * block_size,
                      heads, kv_heads, head_dim};
    int checked = check_paged(&p, batch);
    if (!checked) checked = check_rotary(&r, batch);
    if (checked) return checked;

    const int64_t q_width = heads * head_dim, qkv_width = (heads + 2 * kv_heads) * head_dim;
    const int64_t sizes[] = {hidden, qkv_width, q_width, hidden, 2 * intermediate, intermediate};
    int64_t total = 0;
    for (int i = 0; i < 6; i++) total += batch * ((sizes[i] + LANES - 1) / LANES * LANES);
    float *scratch = aligned_alloc(64, sizeof(float) * total);
    if (scratch == NULL) return ERR_ALLOC;
    float *h = scratch, *qkv = h + batch * ((hidden + LANES - 1) / LANES * LANES);
    float *attn = qkv + batch * ((qkv_width + LANES - 1) / LANES * LANES);
    float *delta = attn + batch * ((q_width + LANES - 1) / LANES * LANES);
    float *gate_up = delta + batch * ((hidden + LANES - 1) / LANES * LANES);
    float *act = gate_up + batch * ((2 * intermediate + LANES - 1) / LANES * LANES);
    int failed = 0;

#pragma omp parallel num_threads(threads) if (threads > 1)
    {
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++) rms_row(h + b * hidden, x + b * hidden, NULL, input_norm, hidden, eps);
        matmul_rows(w_qkv, h, qkv, batch, qkv_width, hidden); /* ends with a barrier, as every omp for */
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++) {
            if (b_qkv != NULL)
                for (int64_t i = 0; i < qkv_width; i++) qkv[b * qkv_width + i] += b_qkv[i];
            rope_token(&r, qkv + b * qkv_width, b);
        }
        if (attend_all(&p, qkv, qkv_width, attn, batch))
#pragma omp atomic write
            failed = 1;
        matmul_rows(w_o, attn, delta, batch, hidden, q_width);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++)
            rms_row(h + b * hidden, x + b * hidden, delta + b * hidden, post_norm, hidden, eps);
        matmul_rows(w_gate_up, h, gate_up, batch, 2 * intermediate, hidden);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++)
            silu_mul_row(gate_up + b * 2 * intermediate, gate_up + b * 2 * intermediate + intermediate,
                         act + b * intermediate, intermediate);
        matmul_rows(w_down, act, delta, batch, hidden, intermediate);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++)
            for (int64_t i = 0; i < hidden; i++) x[b * hidden + i] += delta[b * hidden + i];
    }
    free(scratch);
    return failed ? ERR_ALLOC : OK;
}
