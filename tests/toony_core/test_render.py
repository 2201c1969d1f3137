"""Golden tests of the OpenCL C that toony_core writes for three representative kernels (elementwise over
non-contiguous views, a row reduction, softmax), and of the constant renderer.

The goldens were taken on PoCL (the CPU device CI runs on); another device may choose other work-group sizes,
so they are skipped elsewhere. When codegen changes on purpose, regenerate them with
EXPECTTEST_ACCEPT=1 pytest tests/toony_core/test_render.py and review the diff.
"""

import math

import expecttest
import numpy as np
import pytest

from toony_core import Tensor, device, dtypes, schedule
from toony_core.realize import get_kernel
from toony_core.render import render_const

ON_POCL = "portable computing language" in device().name.lower() or "pocl" in device().name.lower()
pocl_only = pytest.mark.skipif(not ON_POCL, reason=f"goldens were rendered for PoCL, this is {device().name}")


def source(t: Tensor) -> str:
    items = schedule(t)
    assert len(items) == 1
    return get_kernel(items[0].ast).source


def kernel_text(src: str) -> str:
    """The kernel itself, without the helper functions every source starts with."""
    return src[src.index("__kernel"):]


def preamble(src: str) -> str:
    return src[:src.index("__kernel")]


@pocl_only
class TestRenderedSource(expecttest.TestCase):
    def test_elementwise_over_transposed_and_padded_inputs(self):
        # a transposed input only changes the index expression; a padded one adds a guarded load
        a = np.arange(24, dtype=np.float32).reshape(4, 6)
        b = np.arange(12, dtype=np.float32).reshape(6, 2)
        t = Tensor(a).T * 2 + Tensor(b).pad(((0, 0), (1, 1)))
        self.assertExpectedInline(kernel_text(source(t)), """\
__kernel void E_6_4(__global float* data0, __global float* data1, __global float* data2) {
  int gidx = (int)get_global_id(0);
  int v1 = (gidx%4);
  int v2 = (v1*6);
  int v3 = (gidx/4);
  int v4 = (v2+v3);
  float v5 = data1[v4];
  float v6 = (v5*2.0f);
  bool v7 = (1<=v1);
  bool v8 = (v1<3);
  bool v9 = (v7&v8);
  int v10 = (v3*2);
  int v11 = (v10+v1);
  int v12 = (v11+(-1));
  int v13 = (v12%12);
  float v14 = (v9?data2[v13]:0.0f);
  float v15 = (v9?v14:0.0f);
  float v16 = (v6+v15);
  data0[gidx] = v16;
}
""")
        np.testing.assert_array_equal(t.numpy(), a.T * 2 + np.pad(b, ((0, 0), (1, 1))))

    def test_row_reduction(self):
        # DESIGN.md's example: (a * 2 + b).sum(axis=1) on (1024, 512)
        a = np.ones((1024, 512), np.float32)
        t = (Tensor(a) * 2 + Tensor(a)).sum(axis=1)
        self.assertExpectedInline(kernel_text(source(t)), """\
__kernel void r_1024_r512(__global float* data0, __global float* data1, __global float* data2) {
  int gidx = (int)get_global_id(0);
  int v1 = (gidx*512);
  float acc2 = 0.0f;
  float acc3 = 0.0f;
  float acc4 = 0.0f;
  float acc5 = 0.0f;
  float acc6 = 0.0f;
  float acc7 = 0.0f;
  float acc8 = 0.0f;
  float acc9 = 0.0f;
  for (int r1 = 0; r1 < 64; r1++) {
    int v10 = (r1*8);
    int v11 = (v1+v10);
    float v12 = data1[v11];
    float v13 = (v12*2.0f);
    float v14 = data2[v11];
    float v15 = (v13+v14);
    acc2 = (acc2+v15);
    int v16 = (v11+1);
    float v17 = data1[v16];
    float v18 = (v17*2.0f);
    float v19 = data2[v16];
    float v20 = (v18+v19);
    acc3 = (acc3+v20);
    int v21 = (v11+2);
    float v22 = data1[v21];
    float v23 = (v22*2.0f);
    float v24 = data2[v21];
    float v25 = (v23+v24);
    acc4 = (acc4+v25);
    int v26 = (v11+3);
    float v27 = data1[v26];
    float v28 = (v27*2.0f);
    float v29 = data2[v26];
    float v30 = (v28+v29);
    acc5 = (acc5+v30);
    int v31 = (v11+4);
    float v32 = data1[v31];
    float v33 = (v32*2.0f);
    float v34 = data2[v31];
    float v35 = (v33+v34);
    acc6 = (acc6+v35);
    int v36 = (v11+5);
    float v37 = data1[v36];
    float v38 = (v37*2.0f);
    float v39 = data2[v36];
    float v40 = (v38+v39);
    acc7 = (acc7+v40);
    int v41 = (v11+6);
    float v42 = data1[v41];
    float v43 = (v42*2.0f);
    float v44 = data2[v41];
    float v45 = (v43+v44);
    acc8 = (acc8+v45);
    int v46 = (v11+7);
    float v47 = data1[v46];
    float v48 = (v47*2.0f);
    float v49 = data2[v46];
    float v50 = (v48+v49);
    acc9 = (acc9+v50);
  }
  float v51 = (acc2+acc3);
  float v52 = (acc4+acc5);
  float v53 = (v51+v52);
  float v54 = (acc6+acc7);
  float v55 = (acc8+acc9);
  float v56 = (v54+v55);
  float v57 = (v53+v56);
  data0[gidx] = v57;
}
""")
        np.testing.assert_array_equal(t.numpy(), np.full(1024, 1536.0, np.float32))

    def test_softmax(self):
        x = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
        t = Tensor(x).softmax(-1)
        self.assertExpectedInline(kernel_text(source(t)), """\
__kernel void r_64_l32_r32_r32(__global float* data0, __global float* data1) {
  int gidx = (int)get_global_id(0);
  int v1 = (gidx*32);
  float acc2 = (-INFINITY);
  for (int r2 = 0; r2 < 32; r2++) {
    int v3 = (v1+r2);
    float v4 = data1[v3];
    acc2 = ((acc2>v4||acc2!=acc2)?acc2:v4);
  }
  float acc5 = 0.0f;
  for (int r3 = 0; r3 < 32; r3++) {
    int v6 = (v1+r3);
    float v7 = data1[v6];
    float v8 = (v7-acc2);
    bool v9 = (v8!=v8);
    bool v10 = (v8<(-103.972084f));
    bool v11 = (88.7228394f<v8);
    float v12 = (v10?(-103.972084f):v8);
    bool v13 = (88.7228394f<v12);
    float v14 = (v13?88.7228394f:v12);
    float v15 = (v14*1.44269504f);
    bool v16 = (v15<0.0f);
    float v17 = (v16?(-0.5f):0.5f);
    float v18 = (v15+v17);
    int v19 = ((int)(v18));
    float v20 = ((float)(v19));
    float v21 = (v20*0.693359375f);
    float v22 = (v14-v21);
    float v23 = (v20*(-0.00021219444f));
    float v24 = (v22-v23);
    float v25 = (v24*0.000198756915f);
    float v26 = (v25+0.00139819995f);
    float v27 = (v26*v24);
    float v28 = (v27+0.00833345191f);
    float v29 = (v28*v24);
    float v30 = (v29+0.0416657959f);
    float v31 = (v30*v24);
    float v32 = (v31+0.166666655f);
    float v33 = (v32*v24);
    float v34 = (v33+0.500000012f);
    float v35 = (v24*v24);
    float v36 = (v34*v35);
    float v37 = (v36+v24);
    float v38 = (v37+1.0f);
    int v39 = (v19>>1);
    int v40 = (v39+127);
    int v41 = (v40<<23);
    float v42 = as_float(v41);
    float v43 = (v38*v42);
    int v44 = (v39*(-1));
    int v45 = (v19+v44);
    int v46 = (v45+127);
    int v47 = (v46<<23);
    float v48 = as_float(v47);
    float v49 = (v43*v48);
    float v50 = (v11?INFINITY:v49);
    float v51 = (v10?0.0f:v50);
    float v52 = (v9?v8:v51);
    acc5 = (acc5+v52);
  }
  for (int r1 = 0; r1 < 32; r1++) {
    int v53 = (v1+r1);
    float v54 = data1[v53];
    float v55 = (v54-acc2);
    bool v56 = (v55!=v55);
    bool v57 = (v55<(-103.972084f));
    bool v58 = (88.7228394f<v55);
    float v59 = (v57?(-103.972084f):v55);
    bool v60 = (88.7228394f<v59);
    float v61 = (v60?88.7228394f:v59);
    float v62 = (v61*1.44269504f);
    bool v63 = (v62<0.0f);
    float v64 = (v63?(-0.5f):0.5f);
    float v65 = (v62+v64);
    int v66 = ((int)(v65));
    float v67 = ((float)(v66));
    float v68 = (v67*0.693359375f);
    float v69 = (v61-v68);
    float v70 = (v67*(-0.00021219444f));
    float v71 = (v69-v70);
    float v72 = (v71*0.000198756915f);
    float v73 = (v72+0.00139819995f);
    float v74 = (v73*v71);
    float v75 = (v74+0.00833345191f);
    float v76 = (v75*v71);
    float v77 = (v76+0.0416657959f);
    float v78 = (v77*v71);
    float v79 = (v78+0.166666655f);
    float v80 = (v79*v71);
    float v81 = (v80+0.500000012f);
    float v82 = (v71*v71);
    float v83 = (v81*v82);
    float v84 = (v83+v71);
    float v85 = (v84+1.0f);
    int v86 = (v66>>1);
    int v87 = (v86+127);
    int v88 = (v87<<23);
    float v89 = as_float(v88);
    float v90 = (v85*v89);
    int v91 = (v86*(-1));
    int v92 = (v66+v91);
    int v93 = (v92+127);
    int v94 = (v93<<23);
    float v95 = as_float(v94);
    float v96 = (v90*v95);
    float v97 = (v58?INFINITY:v96);
    float v98 = (v57?0.0f:v97);
    float v99 = (v56?v55:v98);
    float v100 = (v99/acc5);
    data0[v53] = v100;
  }
}
""")
        e = np.exp(x - x.max(-1, keepdims=True))
        np.testing.assert_allclose(t.numpy(), e / e.sum(-1, keepdims=True), rtol=1e-5)

    def test_helper_preamble(self):
        t = Tensor(np.ones(4, np.float32)) + 1
        self.assertExpectedInline(preamble(source(t)), """\
inline ushort f2bf(float f) { uint u = as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (ushort)((u >> 16) | 0x40u);
  return (ushort)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16); }
inline float bf2f(ushort b) { return as_float(((uint)b) << 16); }
inline ushort f2h(float f) { ushort h; vstore_half_rte(f, 0, (__private half*)&h); return h; }
inline float h2f(ushort h) { return vload_half(0, (__private const half*)&h); }
inline void atomic_add_float(volatile __global float* p, float v) {
  uint old = as_uint(*p), prev;
  do { prev = old; old = atomic_cmpxchg((volatile __global uint*)p, prev, as_uint(as_float(prev) + v)); }
  while (old != prev); }

""")


def test_source_is_deterministic():
    # the disk cache is keyed by source: building the same graph twice must print the same text
    def build():
        a = Tensor(np.ones((8, 8), np.float32))
        return (a.permute(1, 0).flip(0) * 3).exp().sum(1)
    assert source(build()) == source(build())


def test_16bit_and_bool_storage():
    h = source(Tensor(np.ones(4, np.float16)) * 2)
    assert "vload_half" in h and "vstore_half_rte" in h
    b = source(Tensor(np.ones(4, np.float32), dtypes.bfloat16) * 2)
    assert "bf2f(" in b and "f2bf(" in b and "__global ushort*" in b
    q = source(Tensor(np.ones(4, np.float32)) < 1)
    assert "__global uchar*" in q


def test_render_const():
    f32, f64 = dtypes.float32, dtypes.float64
    assert render_const(1.0, f32) == "1.0f"
    assert np.float32(render_const(0.1, f32).rstrip("f")) == np.float32(0.1)
    assert float(render_const(0.1, f64)) == 0.1
    assert render_const(-0.0, f32) == "(-0.0f)"  # parenthesized: `x - (-0.0f)`, never `x--0.0f`
    assert render_const(math.inf, f32) == "INFINITY"
    assert render_const(-math.inf, f32) == "(-INFINITY)"
    assert render_const(math.nan, f32) == "NAN"
    assert "NAN" in render_const(math.nan, f64) and "double" in render_const(math.nan, f64)
    assert render_const(True, dtypes.bool) == "true"
    assert render_const(7, dtypes.int32) == "7"
    assert render_const(7, dtypes.int64) == "7L"
    assert render_const(7, dtypes.uint32) == "7u"
    assert render_const(7, dtypes.uint64) == "7ul"


def test_integer_constants_survive_rendering():
    # the most negative value of a C integer type cannot be written as one literal
    for dt in (dtypes.int8, dtypes.int16, dtypes.int32, dtypes.int64):
        info = np.iinfo(dt.np)
        for v in (info.min, info.max, -1):
            got = (Tensor(np.zeros(1, dt.np)) + int(v)).numpy()[0]
            assert got == v, (dt, v, got)
    for dt in (dtypes.uint32, dtypes.uint64):
        v = int(np.iinfo(dt.np).max)
        assert (Tensor(np.zeros(1, dt.np)) + v).numpy()[0] == v


def test_float_constants_survive_rendering():
    # constants are printed with enough digits to come back bit-exact
    vals = np.array([0.1, 1 / 3, 3.4028235e38, 1.17549435e-38, 1e-45, -2.5e-7], np.float32)
    for v in vals:
        got = (Tensor(np.zeros(1, np.float32)) + float(v)).numpy()[0]
        assert got.view(np.uint32) == v.view(np.uint32), (v, got)
    d = np.array([0.1, 1 / 3, 1.7976931348623157e308, 5e-324, 2.0 ** -1074 * 3])
    for v in d:
        got = (Tensor(np.zeros(1)) + float(v)).numpy()[0]
        assert got == v, (v, got)
