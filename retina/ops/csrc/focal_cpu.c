/* Fused float32 CPU kernels of the sigmoid focal loss: one pass over memory per call.
 *
 * Built on first use by retina/ops/focal_native.py (cc -O3 -march=native -fopenmp-simd,
 * no -ffast-math: IEEE semantics are kept, NaN inputs give NaN outputs) and called through
 * ctypes, which releases the GIL. Each entry point splits its rows over `nthreads` POSIX
 * threads; every thread writes disjoint outputs, and sums are returned as per-row (or
 * per-block) float64 partials that the caller reduces, so results do not depend on the
 * thread count.
 *
 * The transcendental functions are branch-free polynomial versions (Cephes coefficients,
 * about 1 ulp in float32) so that the compiler vectorises every loop; libm's scalar calls
 * would not be. Notation and derivatives as in retina/ops/focal_kernels.py (paper,
 * Appendix B): e = exp(-|x|), p = sigmoid(x), q = sigmoid(-x) (both from e, never 1 - p),
 * softplus(x) = max(x, 0) + log1p(e).
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

enum { G0 = 0, G1 = 1, G2 = 2, GEN = 3 }; /* gamma 0, 1, 2, any other */

#define LN2_HI 0.693359375f
#define LN2_LO (-2.12194440e-4f)
#define DENSE_BLOCK 4096

INLINE float bits_to_float(int32_t i) {
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}

INLINE int32_t float_to_bits(float f) {
    int32_t i;
    memcpy(&i, &f, sizeof i);
    return i;
}

/* exp(v) for v <= 0 (0 below the smallest normal float's log, where the result underflows). */
INLINE float exp_nonpos(float v) {
    const float lo = -87.33f;
    float vc = v < lo ? lo : v;
    float fn = (vc * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = vc - fn * LN2_HI;
    r = r - fn * LN2_LO;
    float z = r * r;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * z + r + 1.0f;
    int32_t n = (int32_t)fn;
    y = y * bits_to_float((n + 127) << 23);
    return v < lo ? 0.0f : y;
}

/* log(1 + f) for f in [sqrt(1/2) - 1, sqrt(2) - 1], without the k ln 2 term. */
INLINE float log1p_reduced(float f) {
    float z = f * f;
    float y = 7.0376836292e-2f;
    y = y * f - 1.1514610310e-1f;
    y = y * f + 1.1676998740e-1f;
    y = y * f - 1.2420140846e-1f;
    y = y * f + 1.4249322787e-1f;
    y = y * f - 1.6668057665e-1f;
    y = y * f + 2.0000714765e-1f;
    y = y * f - 2.4999993993e-1f;
    y = y * f + 3.3333331174e-1f;
    y = y * f * z;
    y = y - 0.5f * z;
    return f + y;
}

/* log1p(e) for e in [0, 1]: exact to rounding for tiny e (no 1 + e is formed there). */
INLINE float log1p_unit(float e) {
    int big = e > 0.41421356f;
    /* log(1 + e) = ln 2 + log1p((e - 1) / 2) for e > sqrt(2) - 1 */
    float f = big ? (e - 1.0f) * 0.5f : e;
    float k = big ? 1.0f : 0.0f;
    float y = log1p_reduced(f);
    return (y + k * LN2_LO) + k * LN2_HI;
}

/* log(m) for m in [0, 1]; -inf at 0. */
INLINE float log_unit(float m) {
    int tiny = m < 1.17549435e-38f; /* subnormal: scale by 2^24 first */
    float ms = tiny ? m * 16777216.0f : m;
    int32_t b = float_to_bits(ms);
    int32_t ex = ((b >> 23) & 0xff) - 127;
    float mant = bits_to_float((b & 0x007fffff) | 0x3f800000); /* [1, 2) */
    int hi = mant > 1.41421356f;
    mant = hi ? mant * 0.5f : mant;
    float k = (float)(ex + hi) - (tiny ? 24.0f : 0.0f);
    float y = log1p_reduced(mant - 1.0f);
    y = (y + k * LN2_LO) + k * LN2_HI;
    return m > 0.0f ? y : -__builtin_inff();
}

/* m^gamma for m in [0, 1] given log(m) (GEN mode only; gamma > 0). */
INLINE float pow_from_log(float logm, float gamma) {
    float v = gamma * logm;
    return exp_nonpos(v < 0.0f ? v : 0.0f);
}

INLINE float powm(float m, float logm, float gamma, const int mode) {
    if (mode == G0) return 1.0f;
    if (mode == G1) return m;
    if (mode == G2) return m * m;
    return pow_from_log(logm, gamma);
}

/* ------------------------------------------------------------------ threading */
typedef struct {
    const float *x;
    const float *t;
    const int64_t *labels;
    const float *grad; /* NULL: grad_scalar everywhere */
    float grad_scalar;
    float *out;        /* elementwise loss or gradient; NULL for a sum-only forward */
    double *partial;   /* per-row (labels) or per-block (dense) sums; NULL when unused */
    int64_t n;         /* elements (dense) or rows (labels) */
    int64_t k;         /* classes (labels) */
    float alpha;
    int has_alpha;
    float gamma;
    int mode;
} params_t;

typedef void (*range_fn)(const params_t *, int64_t, int64_t);

typedef struct {
    const params_t *p;
    range_fn fn;
    int64_t lo, hi;
} job_t;

static void *run_job(void *arg) {
    job_t *j = (job_t *)arg;
    j->fn(j->p, j->lo, j->hi);
    return NULL;
}

/* Calls fn on `units` work units split into nthreads contiguous ranges. */
static void run_parallel(const params_t *p, range_fn fn, int64_t units, int nthreads) {
    if (nthreads > 64) nthreads = 64;
    if (nthreads > units) nthreads = (int)units;
    if (nthreads <= 1) {
        if (units > 0) fn(p, 0, units);
        return;
    }
    pthread_t th[64];
    job_t jobs[64];
    int started[64];
    for (int i = 0; i < nthreads; i++) {
        jobs[i].p = p;
        jobs[i].fn = fn;
        jobs[i].lo = units * i / nthreads;
        jobs[i].hi = units * (i + 1) / nthreads;
    }
    /* range 0 runs on the calling thread; a range whose thread cannot start runs here too */
    for (int i = 1; i < nthreads; i++) {
        started[i] = pthread_create(&th[i], NULL, run_job, &jobs[i]) == 0;
        if (!started[i]) run_job(&jobs[i]);
    }
    run_job(&jobs[0]);
    for (int i = 1; i < nthreads; i++)
        if (started[i]) pthread_join(th[i], NULL);
}

/* ------------------------------------------------------------------ dense targets */
/* FL(x, t) = a_t m^g ce,  m = (1 - t) p + t q,  ce = max(x, 0) - t x + log1p(e). */
INLINE float dense_loss(float x, float t, float alpha, int has_alpha, float gamma,
                        const int mode) {
    float a = x < 0.0f ? -x : x;
    float e = exp_nonpos(-a);
    float l1p = log1p_unit(e);
    float ce = (x > 0.0f ? x : 0.0f) - t * x + l1p;
    float loss = ce;
    if (mode != G0) {
        float d = 1.0f / (1.0f + e);
        float p = x >= 0.0f ? d : e * d;
        float q = x >= 0.0f ? e * d : d;
        float m = (1.0f - t) * p + t * q;
        float logm = mode == GEN ? log_unit(m) : 0.0f;
        loss = powm(m, logm, gamma, mode) * ce;
    }
    if (has_alpha) loss *= (1.0f - alpha) + t * (2.0f * alpha - 1.0f);
    return x != x ? x : loss;
}

/* dFL/dx = a_t m^(g-1) (m (p - t) + g (1 - 2t) p q ce), written without m^(g-1) for g < 1. */
INLINE float dense_grad(float x, float t, float alpha, int has_alpha, float gamma,
                        const int mode) {
    float a = x < 0.0f ? -x : x;
    float e = exp_nonpos(-a);
    float d = 1.0f / (1.0f + e);
    float p = x >= 0.0f ? d : e * d;
    float q = x >= 0.0f ? e * d : d;
    float pmt = (1.0f - t) * p - t * q; /* p - t, exact for t in {0, 1} */
    float g = pmt;
    if (mode != G0) {
        float ce = (x > 0.0f ? x : 0.0f) - t * x + log1p_unit(e);
        float m = (1.0f - t) * p + t * q;
        float s = (1.0f - 2.0f * t) * p * q * ce;
        if (mode == G1) {
            g = m * pmt + s;
        } else if (mode == G2) {
            g = m * (m * pmt + 2.0f * s);
        } else {
            float w = pow_from_log(log_unit(m), gamma);
            float r = m > 0.0f ? s / m : 0.0f;
            g = w * (pmt + gamma * r);
        }
    }
    if (has_alpha) g *= (1.0f - alpha) + t * (2.0f * alpha - 1.0f);
    return x != x ? x : g;
}

INLINE void dense_fwd_range_mode(const params_t *P, int64_t b0, int64_t b1, const int mode) {
    for (int64_t b = b0; b < b1; b++) {
        int64_t lo = b * DENSE_BLOCK;
        int64_t hi = lo + DENSE_BLOCK < P->n ? lo + DENSE_BLOCK : P->n;
        const float *x = P->x, *t = P->t;
        float acc = 0.0f;
        if (P->out) {
            float *out = P->out;
#pragma omp simd reduction(+ : acc)
            for (int64_t i = lo; i < hi; i++) {
                float v = dense_loss(x[i], t[i], P->alpha, P->has_alpha, P->gamma, mode);
                out[i] = v;
                acc += v;
            }
        } else {
#pragma omp simd reduction(+ : acc)
            for (int64_t i = lo; i < hi; i++)
                acc += dense_loss(x[i], t[i], P->alpha, P->has_alpha, P->gamma, mode);
        }
        if (P->partial) P->partial[b] = (double)acc;
    }
}

INLINE void dense_bwd_range_mode(const params_t *P, int64_t b0, int64_t b1, const int mode) {
    int64_t lo = b0 * DENSE_BLOCK;
    int64_t hi = b1 * DENSE_BLOCK < P->n ? b1 * DENSE_BLOCK : P->n;
    const float *x = P->x, *t = P->t, *gr = P->grad;
    float *out = P->out;
    if (gr) {
#pragma omp simd
        for (int64_t i = lo; i < hi; i++)
            out[i] = gr[i] * dense_grad(x[i], t[i], P->alpha, P->has_alpha, P->gamma, mode);
    } else {
        float gs = P->grad_scalar;
#pragma omp simd
        for (int64_t i = lo; i < hi; i++)
            out[i] = gs * dense_grad(x[i], t[i], P->alpha, P->has_alpha, P->gamma, mode);
    }
}

#define DISPATCH(NAME, BODY)                                                     \
    static void NAME##_g0(const params_t *P, int64_t a, int64_t b) { BODY(P, a, b, G0); } \
    static void NAME##_g1(const params_t *P, int64_t a, int64_t b) { BODY(P, a, b, G1); } \
    static void NAME##_g2(const params_t *P, int64_t a, int64_t b) { BODY(P, a, b, G2); } \
    static void NAME##_gen(const params_t *P, int64_t a, int64_t b) { BODY(P, a, b, GEN); } \
    static range_fn NAME##_pick(int mode) {                                       \
        return mode == G0 ? NAME##_g0 : mode == G1 ? NAME##_g1 : mode == G2 ? NAME##_g2 \
                                                                         : NAME##_gen; \
    }

DISPATCH(dense_fwd, dense_fwd_range_mode)
DISPATCH(dense_bwd, dense_bwd_range_mode)

static int gamma_mode(float gamma) {
    return gamma == 0.0f ? G0 : gamma == 1.0f ? G1 : gamma == 2.0f ? G2 : GEN;
}

/* Forward over n elements: out[i] (if out) and partial[b] = sum of block b of
 * DENSE_BLOCK elements (if partial; ceil(n / DENSE_BLOCK) entries). */
void retina_focal_dense_fwd(const float *x, const float *t, int64_t n, float alpha,
                           int has_alpha, float gamma, float *out, double *partial,
                           int nthreads) {
    params_t P = {x, t, NULL, NULL, 0.0f, out, partial, n, 0, alpha, has_alpha, gamma,
                  gamma_mode(gamma)};
    int64_t blocks = (n + DENSE_BLOCK - 1) / DENSE_BLOCK;
    run_parallel(&P, dense_fwd_pick(P.mode), blocks, nthreads);
}

/* out[i] = dFL/dx[i] * (grad ? grad[i] : grad_scalar). */
void retina_focal_dense_bwd(const float *x, const float *t, int64_t n, float alpha,
                           int has_alpha, float gamma, const float *grad, float grad_scalar,
                           float *out, int nthreads) {
    params_t P = {x, t, NULL, grad, grad_scalar, out, NULL, n, 0, alpha, has_alpha, gamma,
                  gamma_mode(gamma)};
    int64_t blocks = (n + DENSE_BLOCK - 1) / DENSE_BLOCK;
    run_parallel(&P, dense_bwd_pick(P.mode), blocks, nthreads);
}

/* ------------------------------------------------------------------ integer labels */
/* With z = -x at the label column and x elsewhere: FL = w sigmoid(z)^g softplus(z),
 * dFL/dz = w sigmoid(z)^g (sigmoid(z) + g sigmoid(-z) softplus(z)). */
INLINE float label_loss(float z, float w, float gamma, const int mode) {
    float a = z < 0.0f ? -z : z;
    float e = exp_nonpos(-a);
    float l1p = log1p_unit(e);
    float sp = (z > 0.0f ? z : 0.0f) + l1p;
    float loss = sp;
    if (mode != G0) {
        float d = 1.0f / (1.0f + e);
        float p = z >= 0.0f ? d : e * d;
        float logp = (z < 0.0f ? z : 0.0f) - l1p; /* log sigmoid(z), no cancellation */
        loss = powm(p, logp, gamma, mode) * sp;
    }
    return z != z ? z : w * loss;
}

INLINE float label_dz(float z, float gamma, const int mode) {
    float a = z < 0.0f ? -z : z;
    float e = exp_nonpos(-a);
    float d = 1.0f / (1.0f + e);
    float p = z >= 0.0f ? d : e * d;
    float g = p;
    if (mode != G0) {
        float q = z >= 0.0f ? e * d : d;
        float l1p = log1p_unit(e);
        float sp = (z > 0.0f ? z : 0.0f) + l1p;
        float logp = (z < 0.0f ? z : 0.0f) - l1p;
        g = powm(p, logp, gamma, mode) * (p + gamma * q * sp);
    }
    return z != z ? z : g;
}

/* Both at once for the fused forward: returns FL and writes dFL/dz to *dz. */
INLINE float label_loss_dz(float z, float w, float gamma, const int mode, float *dz) {
    float a = z < 0.0f ? -z : z;
    float e = exp_nonpos(-a);
    float d = 1.0f / (1.0f + e);
    float p = z >= 0.0f ? d : e * d;
    float l1p = log1p_unit(e);
    float sp = (z > 0.0f ? z : 0.0f) + l1p;
    float loss = sp, g = p;
    if (mode != G0) {
        float q = z >= 0.0f ? e * d : d;
        float logp = (z < 0.0f ? z : 0.0f) - l1p;
        float pw = powm(p, logp, gamma, mode);
        loss = pw * sp;
        g = pw * (p + gamma * q * sp);
    }
    *dz = z != z ? z : g;
    return z != z ? z : w * loss;
}

INLINE void labels_fwd_range_mode(const params_t *P, int64_t r0, int64_t r1, const int mode) {
    const int32_t K = (int32_t)P->k;
    const float pos_w = P->has_alpha ? P->alpha : 1.0f;
    const float bg_w = P->has_alpha ? 1.0f - P->alpha : 1.0f;
    for (int64_t r = r0; r < r1; r++) {
        const int32_t lab = P->labels[r] < -2 ? -2 : (int32_t)P->labels[r];
        const float *x = P->x + r * K;
        float *out = P->out ? P->out + r * K : NULL;
        float acc = 0.0f;
        if (lab < -1) { /* ignored anchor */
            if (out)
                for (int32_t c = 0; c < K; c++) out[c] = 0.0f;
        } else if (out) {
#pragma omp simd reduction(+ : acc)
            for (int32_t c = 0; c < K; c++) {
                float z = c == lab ? -x[c] : x[c];
                float v = label_loss(z, c == lab ? pos_w : bg_w, P->gamma, mode);
                out[c] = v;
                acc += v;
            }
        } else {
#pragma omp simd reduction(+ : acc)
            for (int32_t c = 0; c < K; c++) {
                float z = c == lab ? -x[c] : x[c];
                acc += label_loss(z, c == lab ? pos_w : bg_w, P->gamma, mode);
            }
        }
        if (P->partial) P->partial[r] = (double)acc;
    }
}

INLINE void labels_bwd_range_mode(const params_t *P, int64_t r0, int64_t r1, const int mode) {
    const int32_t K = (int32_t)P->k;
    const float pos_s = -(P->has_alpha ? P->alpha : 1.0f); /* dz/dx = -1 at the label */
    const float bg_w = P->has_alpha ? 1.0f - P->alpha : 1.0f;
    for (int64_t r = r0; r < r1; r++) {
        const int32_t lab = P->labels[r] < -2 ? -2 : (int32_t)P->labels[r];
        const float *x = P->x + r * K;
        float *out = P->out + r * K;
        if (lab < -1) {
            for (int32_t c = 0; c < K; c++) out[c] = 0.0f;
            continue;
        }
        if (P->grad) {
            const float *gr = P->grad + r * K;
#pragma omp simd
            for (int32_t c = 0; c < K; c++) {
                float z = c == lab ? -x[c] : x[c];
                out[c] = gr[c] * (c == lab ? pos_s : bg_w) * label_dz(z, P->gamma, mode);
            }
        } else {
            const float ps = pos_s * P->grad_scalar, bs = bg_w * P->grad_scalar;
#pragma omp simd
            for (int32_t c = 0; c < K; c++) {
                float z = c == lab ? -x[c] : x[c];
                out[c] = (c == lab ? ps : bs) * label_dz(z, P->gamma, mode);
            }
        }
    }
}

/* Forward and backward in one pass: partial[r] = the loss of row r, out = dFL/dx (for an
 * upstream gradient of 1). */
INLINE void labels_fused_range_mode(const params_t *P, int64_t r0, int64_t r1,
                                    const int mode) {
    const int32_t K = (int32_t)P->k;
    const float pos_w = P->has_alpha ? P->alpha : 1.0f;
    const float bg_w = P->has_alpha ? 1.0f - P->alpha : 1.0f;
    for (int64_t r = r0; r < r1; r++) {
        const int32_t lab = P->labels[r] < -2 ? -2 : (int32_t)P->labels[r];
        const float *x = P->x + r * K;
        float *out = P->out + r * K;
        float acc = 0.0f;
        if (lab < -1) {
            for (int32_t c = 0; c < K; c++) out[c] = 0.0f;
        } else {
#pragma omp simd reduction(+ : acc)
            for (int32_t c = 0; c < K; c++) {
                int is_pos = c == lab;
                float z = is_pos ? -x[c] : x[c];
                float dz;
                acc += label_loss_dz(z, is_pos ? pos_w : bg_w, P->gamma, mode, &dz);
                out[c] = (is_pos ? -pos_w : bg_w) * dz;
            }
        }
        P->partial[r] = (double)acc;
    }
}

DISPATCH(labels_fwd, labels_fwd_range_mode)
DISPATCH(labels_bwd, labels_bwd_range_mode)
DISPATCH(labels_fused, labels_fused_range_mode)

/* Forward over rows (n, k): out (n, k) (if out; 0 on ignored rows) and partial[r] = the sum
 * of row r (if partial). labels: >= 0 class, -1 background, -2 ignored. */
void retina_focal_labels_fwd(const float *x, const int64_t *labels, int64_t n, int64_t k,
                            float alpha, int has_alpha, float gamma, float *out,
                            double *partial, int nthreads) {
    params_t P = {x, NULL, labels, NULL, 0.0f, out, partial, n, k, alpha, has_alpha, gamma,
                  gamma_mode(gamma)};
    run_parallel(&P, labels_fwd_pick(P.mode), n, nthreads);
}

/* out (n, k) = dFL/dx * (grad ? grad : grad_scalar); 0 on ignored rows. */
void retina_focal_labels_bwd(const float *x, const int64_t *labels, int64_t n, int64_t k,
                            float alpha, int has_alpha, float gamma, const float *grad,
                            float grad_scalar, float *out, int nthreads) {
    params_t P = {x, NULL, labels, grad, grad_scalar, out, NULL, n, k, alpha, has_alpha,
                  gamma, gamma_mode(gamma)};
    run_parallel(&P, labels_bwd_pick(P.mode), n, nthreads);
}

/* The fused forward: partial[r] = the loss of row r and out (n, k) = dFL/dx, one pass. */
void retina_focal_labels_fused(const float *x, const int64_t *labels, int64_t n, int64_t k,
                               float alpha, int has_alpha, float gamma, float *out,
                               double *partial, int nthreads) {
    params_t P = {x, NULL, labels, NULL, 0.0f, out, partial, n, k, alpha, has_alpha, gamma,
                  gamma_mode(gamma)};
    run_parallel(&P, labels_fused_pick(P.mode), n, nthreads);
}
