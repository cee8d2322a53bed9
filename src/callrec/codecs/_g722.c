/*
 * G.722 decoder (ITU-T G.722, mode 1: 64 kbit/s, 16 kHz output) for callrec.
 *
 * Written from the ITU-T recommendation's block descriptions. Every output sample is the
 * same as FFmpeg's and libg722's (tests/codecs/test_g722_native.py checks it).
 *
 * Why our own: the server decodes every G.722 packet of every call, and libg722's decode
 * was two thirds of callrec's CPU per G.722 packet. This one takes under half of its time,
 * in ~210 bytes per stream where libg722 takes ~1 KiB (docs/performance.md). A run of bytes is
 * decoded in two passes:
 *   1. the two ADPCM sub-band decoders, a serial chain per byte, with the state held in
 *      local variables (registers) for the whole run rather than in memory, and the six
 *      taps of each zero predictor as the lanes of one SSE2 register (portable C elsewhere,
 *      or with -DCALLREC_G722_PORTABLE, which the tests build and compare too);
 *   2. the receive QMF, two 12-tap FIRs over the sub-band signals of the whole run, which
 *      the compiler vectorises at -O3 because no output depends on another.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__) && !defined(CALLREC_G722_PORTABLE)
#include <emmintrin.h>
#define G722_SSE2 1
#endif

/* Pairs of sample history the QMF needs before the first pair of a run. */
#define QMF_HISTORY 11

typedef struct {
    int16_t dz[8];       /* 2 x quantised difference, 1 to 6 samples ago (lanes 6, 7 unused) */
    int16_t bz[8];       /* zero coefficients b1 to b6 (lanes 6, 7 zero) */
    int32_t s, sz;       /* predictor output and its zero section */
    int32_t r1, r2;      /* 2 x reconstructed signal (saturated), one and two samples ago */
    int32_t p1, p2;      /* partial reconstruction, one and two samples ago */
    int32_t a1, a2;      /* pole coefficients */
    int32_t nb, det;     /* log scale factor and scale factor */
} band_state;

typedef struct {
    PyObject_HEAD
    band_state band[2];                /* low, high */
    int16_t sum_hist[QMF_HISTORY];     /* rlow + rhigh of the last pairs, oldest first */
    int16_t diff_hist[QMF_HISTORY];    /* rlow - rhigh */
} DecoderObject;

static inline int32_t sat16(int32_t v)
{
    return v > 32767 ? 32767 : (v < -32768 ? -32768 : v);
}

static inline int32_t clamp(int32_t v, int32_t lo, int32_t hi)
{
    return v > hi ? hi : (v < lo ? lo : v);
}

/* (x * 32640) >> 15 and (x * 32512) >> 15, the leakage factors, without the multiply:
 * equal for every x in [-32768, 32767] (checked over that whole range when written). */
static inline int32_t leak_255_256(int32_t x) { return x + ((-x) >> 8); }
static inline int32_t leak_127_128(int32_t x) { return x + ((-x) >> 7); }

/* Blocks 3L/3H SCALEL/SCALEH: the scale factor from the log scale factor. */
static const int32_t ilb[32] = {
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543,
    2599, 2656, 2714, 2774, 2834, 2896, 2960, 3025, 3091, 3158, 3228,
    3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
};

static inline int32_t scale(int32_t nb, int32_t shift_base)
{
    int32_t wd1 = (nb >> 6) & 31;
    int32_t wd2 = shift_base - (nb >> 11);
    int32_t wd3 = wd2 < 0 ? ilb[wd1] << -wd2 : ilb[wd1] >> wd2;
    return wd3 << 2;
}

/* Block 4 UPZERO, DELAYA (of the differences) and FILTEZ: the six-tap zero section, updated
 * by the quantised difference d; returns its new output sz. Each coefficient leaks and
 * steps by 128 towards the sign agreement of its past difference with this one.
 *
 * Saturations the recommendation writes here cannot trigger, so they are left out: the
 * scale factor never exceeds 16384, so |d| <= 10228 and 2d fits 16 bits; a leaked int16
 * coefficient plus or minus 128 stays in 16 bits; each product term is at most 20456. */
#ifdef G722_SSE2
/* The six taps as 16-bit lanes of one register each, kept in registers for a whole run. */
typedef struct { __m128i d, b; } zeros;

static inline zeros zeros_load(const band_state *st)
{
    zeros z = {_mm_loadu_si128((const __m128i *)st->dz), _mm_loadu_si128((const __m128i *)st->bz)};
    return z;
}

static inline void zeros_store(band_state *st, zeros z)
{
    _mm_storeu_si128((__m128i *)st->dz, z.d);
    _mm_storeu_si128((__m128i *)st->bz, z.b);
}

/* (x * y) >> 15 per lane, exact when the result fits 16 bits: the high half of the product
 * shifted up by one, and the top bit of the low half. */
static inline __m128i mul_q15(__m128i x, __m128i y)
{
    return _mm_or_si128(_mm_slli_epi16(_mm_mulhi_epi16(x, y), 1),
                        _mm_srli_epi16(_mm_mullo_epi16(x, y), 15));
}

static inline int32_t zeros_update(zeros *z, int32_t d)
{
    /* lanes 6 and 7 of the coefficients stay zero, so those of the differences never count */
    const __m128i six = _mm_set_epi16(0, 0, -1, -1, -1, -1, -1, -1);
    /* m: 0 where a past difference has this one's sign, -1 where not; (step ^ m) - m */
    __m128i m = _mm_xor_si128(_mm_srai_epi16(z->d, 15), _mm_set1_epi16((short)(d >> 15)));
    __m128i step = _mm_set1_epi16(d == 0 ? 0 : 128);
    __m128i b = _mm_add_epi16(mul_q15(z->b, _mm_set1_epi16(32640)),
                              _mm_sub_epi16(_mm_xor_si128(step, m), m));
    b = _mm_and_si128(b, six);
    __m128i dd = _mm_insert_epi16(_mm_slli_si128(z->d, 2), d * 2, 0);
    __m128i sum = _mm_madd_epi16(mul_q15(b, dd), _mm_set1_epi16(1));
    sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0x4E));
    sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0xB1));
    z->d = dd;
    z->b = b;
    return sat16(_mm_cvtsi128_si32(sum));
}
#else
typedef struct { int32_t d[6], b[6]; } zeros;

static inline zeros zeros_load(const band_state *st)
{
    zeros z;
    for (int i = 0; i < 6; i++) {
        z.d[i] = st->dz[i];
        z.b[i] = st->bz[i];
    }
    return z;
}

static inline void zeros_store(band_state *st, zeros z)
{
    for (int i = 0; i < 6; i++) {
        st->dz[i] = (int16_t)z.d[i];
        st->bz[i] = (int16_t)z.b[i];
    }
}

static inline int32_t zeros_update(zeros *z, int32_t d)
{
    int32_t step = d == 0 ? 0 : 128, sgd = d >> 15, sz = 0;
    for (int i = 5; i >= 0; i--) {
        int32_t m = (z->d[i] >> 15) ^ sgd;
        z->b[i] = leak_255_256(z->b[i]) + ((step ^ m) - m);
        z->d[i] = i == 0 ? d * 2 : z->d[i - 1];
        sz += (z->b[i] * z->d[i]) >> 15;
    }
    return sat16(sz);
}
#endif

/* Block 4: the adaptive predictor, updated by the quantised difference d. |a1| <= 27648
 * after its clamp, so UPPOL1's saturation cannot trigger either. */
static inline void predict(band_state *restrict st, zeros *z, int32_t d)
{
    int32_t p0 = sat16(st->sz + d);
    int32_t sg0 = p0 >> 15;

    /* UPPOL2 */
    int32_t wd1 = sat16(st->a1 * 4);
    int32_t wd2 = sg0 == (st->p1 >> 15) ? -wd1 : wd1;
    if (wd2 > 32767)
        wd2 = 32767;
    int32_t ap2 = (wd2 >> 7) + (sg0 == (st->p2 >> 15) ? 128 : -128) + leak_127_128(st->a2);
    ap2 = clamp(ap2, -12288, 12288);

    /* UPPOL1 */
    int32_t ap1 = (sg0 == (st->p1 >> 15) ? 192 : -192) + leak_255_256(st->a1);
    int32_t lim = 15360 - ap2;
    ap1 = clamp(ap1, -lim, lim);

    int32_t sz = zeros_update(z, d);

    /* RECONS, DELAYA, FILTEP, PREDIC */
    /* sat16(2 * sat16(x)) is sat16(2 * x), and |s + d| < 2^16 */
    int32_t r1 = sat16((st->s + d) * 2), r2 = st->r1;
    int32_t sp = sat16(((ap1 * r1) >> 15) + ((ap2 * r2) >> 15));

    st->r1 = r1;
    st->r2 = r2;
    st->p2 = st->p1;
    st->p1 = p0;
    st->a1 = ap1;
    st->a2 = ap2;
    st->sz = sz;
    st->s = sat16(sp + sz);
}

static const int32_t qm2[4] = {-7408, -1616, 7408, 1616};
static const int32_t qm4[16] = {
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200,
    20456, 12896, 8968, 6288, 4240, 2584, 1200, 0,
};
static const int32_t qm6[64] = {
    -136, -136, -136, -136, -24808, -21904, -19008, -16704,
    -14984, -13512, -12280, -11192, -10232, -9360, -8576, -7856,
    -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576,
    -3168, -2776, -2400, -2032, -1688, -1360, -1040, -728,
    24808, 21904, 19008, 16704, 14984, 13512, 12280, 11192,
    10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456,
    4944, 4464, 4008, 3576, 3168, 2776, 2400, 2032,
    1688, 1360, 1040, 728, 432, 136, -432, -136,
};
/* Block 3L LOGSCL: the log scale factor's step for each 4-bit low-band code. */
static const int32_t wl_of_code[16] = {
    -60, 3042, 1198, 538, 334, 172, 58, -30, 3042, 1198, 538, 334, 172, 58, -30, -60,
};
/* Block 3H LOGSCH: the same for the 2-bit high-band code. */
static const int32_t wh_of_code[4] = {798, -214, 798, -214};
/* The receive QMF's coefficients (h0..h11, symmetric with h23..h12). */
static const int32_t qmf[12] = {3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11};

/* Pass 1: the sub-band signals of n bytes, written after the history in sum and diff.
 * One band at a time: fewer live values than both bands in one loop, and measured as fast. */
static void subbands(DecoderObject *self, const uint8_t *in, Py_ssize_t n, int16_t *sum,
                     int16_t *diff)
{
    band_state low = self->band[0];
    zeros lowz = zeros_load(&low);
    for (Py_ssize_t j = 0; j < n; j++) {
        int32_t ilow = in[j] & 0x3F;
        /* Blocks 5L, 6L: the low-band reconstruction (6-bit code) */
        sum[j] = (int16_t)clamp(low.s + ((low.det * qm6[ilow]) >> 15), -16384, 16383);
        /* Block 2L: the 4-bit code's difference, which drives the predictor */
        int32_t dlow = (low.det * qm4[ilow >> 2]) >> 15;
        low.nb = clamp(((low.nb * 127) >> 7) + wl_of_code[ilow >> 2], 0, 18432);
        low.det = scale(low.nb, 8);
        predict(&low, &lowz, dlow);
    }
    zeros_store(&low, lowz);
    self->band[0] = low;

    band_state high = self->band[1];
    zeros highz = zeros_load(&high);
    for (Py_ssize_t j = 0; j < n; j++) {
        int32_t ihigh = in[j] >> 6;
        /* Blocks 2H, 5H, 6H: the high band (2-bit code) */
        int32_t dhigh = (high.det * qm2[ihigh]) >> 15;
        int32_t rhigh = clamp(high.s + dhigh, -16384, 16383);
        high.nb = clamp(((high.nb * 127) >> 7) + wh_of_code[ihigh], 0, 22528);
        high.det = scale(high.nb, 10);
        predict(&high, &highz, dhigh);
        int32_t rlow = sum[j];
        sum[j] = (int16_t)(rlow + rhigh);
        diff[j] = (int16_t)(rlow - rhigh);
    }
    zeros_store(&high, highz);
    self->band[1] = high;
}

/* Pass 2: the receive QMF, two output samples per pair. sum and diff start with the
 * QMF_HISTORY pairs before the run. */
static void qmf_out(const int16_t *restrict sum, const int16_t *restrict diff, Py_ssize_t n,
                    int16_t *restrict out)
{
    for (Py_ssize_t j = 0; j < n; j++) {
        int32_t even = 0, odd = 0;
        for (int i = 0; i < 12; i++) {
            even += sum[j + i] * qmf[i];
            odd += diff[j + i] * qmf[11 - i];
        }
        out[2 * j] = (int16_t)sat16(odd >> 11);
        out[2 * j + 1] = (int16_t)sat16(even >> 11);
    }
}

static PyObject *Decoder_decode(DecoderObject *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t n = view.len;
    if (n > (PY_SSIZE_T_MAX - QMF_HISTORY) / 4) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, n * 4);
    int16_t *work = NULL;
    if (result != NULL && n > 0) {
        work = PyMem_Malloc(2 * (n + QMF_HISTORY) * sizeof(int16_t));
        if (work == NULL) {
            Py_CLEAR(result);
            PyErr_NoMemory();
        }
    }
    if (work != NULL) {
        int16_t *sum = work, *diff = work + n + QMF_HISTORY;
        memcpy(sum, self->sum_hist, sizeof self->sum_hist);
        memcpy(diff, self->diff_hist, sizeof self->diff_hist);
        subbands(self, (const uint8_t *)view.buf, n, sum + QMF_HISTORY, diff + QMF_HISTORY);
        int16_t *out = (int16_t *)PyBytes_AS_STRING(result);
        qmf_out(sum, diff, n, out);
#if PY_BIG_ENDIAN
        for (Py_ssize_t k = 0; k < 2 * n; k++)
            out[k] = (int16_t)(((uint16_t)out[k] >> 8) | ((uint16_t)out[k] << 8));
#endif
        memcpy(self->sum_hist, sum + n, sizeof self->sum_hist);
        memcpy(self->diff_hist, diff + n, sizeof self->diff_hist);
        PyMem_Free(work);
    }
    PyBuffer_Release(&view);
    return result;
}

static int Decoder_init(DecoderObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":Decoder", kwlist))
        return -1;
    memset(self->band, 0, sizeof self->band);
    memset(self->sum_hist, 0, sizeof self->sum_hist);
    memset(self->diff_hist, 0, sizeof self->diff_hist);
    self->band[0].det = 32;
    self->band[1].det = 8;
    return 0;
}

static PyMethodDef Decoder_methods[] = {
    {"decode", (PyCFunction)Decoder_decode, METH_O,
     "decode(payload, /)\n--\n\n"
     "The int16 little-endian PCM at 16 kHz of G.722 bytes at 64 kbit/s (4 bytes out per byte "
     "in), continuing from the bytes decoded before."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "callrec.codecs._g722.Decoder",
    .tp_doc = "Decoder()\n--\n\nThe state of one G.722 stream's decoder.",
    .tp_basicsize = sizeof(DecoderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Decoder_init,
    .tp_methods = Decoder_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "callrec.codecs._g722",
    .m_doc = "callrec's G.722 decoder (64 kbit/s, 16 kHz).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__g722(void)
{
    if (PyType_Ready(&DecoderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&DecoderType);
    if (PyModule_AddObject(m, "Decoder", (PyObject *)&DecoderType) < 0) {
        Py_DECREF(&DecoderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
