"""Special functions on the device (torch.special and friends), written as toony arithmetic.

Each function is built from the Tensor front end (polynomials, `where` selections, exp/log/sin/...), so it fuses
into one elementwise kernel like any other pointwise op and never falls back to the CPU. The pointwise lowering
casts inputs to the compute dtype first: float64 stays float64, everything else (integers, bool, the 16-bit
floats) is computed in float32 and rounded once, as torch's CPU kernels do.

The algorithms follow the ones PyTorch's CPU kernels use (aten/src/ATen/native/Math.h, mostly derived from the
Cephes Math Library by Stephen L. Moshier, 3-clause BSD), with the same published coefficients, so that results
agree with the CPU within assert_close's default tolerances, special values (inf, nan, poles) included. Where a
CPU loop runs a data-dependent number of times, the loop is unrolled to a fixed bound and masked; the bounds and
what happens past them are documented at each function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from toony_core import Tensor, device, dtypes
from toony_core.tensor import _broadcast_shape

from .lowering import lowers

Scalar = bool | int | float
INF, NAN = math.inf, math.nan

# ---------------------------------------------------------------- shared helpers


def _poly(x: Tensor, coeffs: Sequence[float], monic: bool = False) -> Tensor:
    """The polynomial with these coefficients (highest power first) at x, by Horner's rule. monic: a leading
    coefficient 1 precedes `coeffs` (Cephes' p1evl)."""
    p = x + coeffs[0] if monic else x * coeffs[0] + coeffs[1]
    for c in coeffs[1 if monic else 2:]:
        p = p * x + c
    return p


def _ratio(x: Tensor, num: Sequence[float], den: Sequence[float], monic_den: bool = False) -> Tensor:
    return _poly(x, num) / _poly(x, den, monic_den)


def _chebyshev(x: Tensor, coeffs: Sequence[float]) -> Tensor:
    """The Chebyshev series with these coefficients at x (Clenshaw's recurrence, as Cephes' chbevl: the series
    is in T_k(x/2), and the result is half the difference of the last two partial values)."""
    b0: Tensor | float = coeffs[0]
    b1: Tensor | float = 0.0
    b2: Tensor | float = 0.0
    for c in coeffs[1:]:
        b2, b1 = b1, b0
        b0 = x * b1 - b2 + c
    return (b0 - b2) * 0.5  # type: ignore[operator]


def _isnan(x: Tensor) -> Tensor:
    return x != x


def _isinf(x: Tensor) -> Tensor:
    return x.abs() == INF


def _negative_bit(x: Tensor) -> Tensor:
    """The sign bit: true for -0.0 too, which a comparison cannot tell from +0.0."""
    return x.bitcast(dtypes.int64 if x.dtype == dtypes.float64 else dtypes.int32) < 0


def _full(like: Tensor, value: float) -> Tensor:
    return Tensor.full(like.shape, value, like.dtype)


def _wide(x: Tensor) -> Tensor:
    """x in float64 where the device has it: torch accumulates some float32 functions (zeta, so polygamma) in
    double on the CPU, and matching its results needs the same precision."""
    return x.cast(dtypes.float64) if x.dtype == dtypes.float32 and device().supports_fp64 else x


def _rounded(x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """fn(x) correctly rounded to float32 for a float32 x (computed in double where the device has it)."""
    return fn(_wide(x)).cast(x.dtype)


def _fms(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """a * b - c rounded once, as a fused multiply-subtract: torch's CPU build contracts its recurrences' loops
    (`(x + x) * q - k * p` runs as fma(x + x, q, -(k * p))), and in a long float32 recurrence near an
    ill-conditioned point (x near 1 for the Chebyshev kinds) the two roundings of a plain multiply and subtract
    drift past the tolerance. A float32 product is exact in double, so the double expression rounded to float32
    is the fused result (double rounding aside)."""
    if a.dtype != dtypes.float32 or not device().supports_fp64:
        return a * b - c
    return (_wide(a) * _wide(b) - _wide(c)).cast(a.dtype)


def _sign_of_int(n: Tensor) -> Tensor:
    """(-1)^n for a float holding an integer."""
    half = n * 0.5
    return (half.floor() == half).where(_full(n, 1.0), -1.0)


# ---------------------------------------------------------------- coefficients (published Cephes constants, as in
# torch's Math.h)

# Chebyshev series of exp(-x) I0(x), exp(-x) I1(x) / x on [0, 8] (A) and of exp(-x) sqrt(x) I on (8, inf) (B)
_I0E_A = (
    -4.41534164647933937950E-18, 3.33079451882223809783E-17, -2.43127984654795469359E-16, 1.71539128555513303061E-15,
    -1.16853328779934516808E-14, 7.67618549860493561688E-14, -4.85644678311192946090E-13, 2.95505266312963983461E-12,
    -1.72682629144155570723E-11, 9.67580903537323691224E-11, -5.18979560163526290666E-10, 2.65982372468238665035E-9,
    -1.30002500998624804212E-8, 6.04699502254191894932E-8, -2.67079385394061173391E-7, 1.11738753912010371815E-6,
    -4.41673835845875056359E-6, 1.64484480707288970893E-5, -5.75419501008210370398E-5, 1.88502885095841655729E-4,
    -5.76375574538582365885E-4, 1.63947561694133579842E-3, -4.32430999505057594430E-3, 1.05464603945949983183E-2,
    -2.37374148058994688156E-2, 4.93052842396707084878E-2, -9.49010970480476444210E-2, 1.71620901522208775349E-1,
    -3.04682672343198398683E-1, 6.76795274409476084995E-1
)
_I0E_B = (
    -7.23318048787475395456E-18, -4.83050448594418207126E-18, 4.46562142029675999901E-17, 3.46122286769746109310E-17,
    -2.82762398051658348494E-16, -3.42548561967721913462E-16, 1.77256013305652638360E-15, 3.81168066935262242075E-15,
    -9.55484669882830764870E-15, -4.15056934728722208663E-14, 1.54008621752140982691E-14, 3.85277838274214270114E-13,
    7.18012445138366623367E-13, -1.79417853150680611778E-12, -1.32158118404477131188E-11, -3.14991652796324136454E-11,
    1.18891471078464383424E-11, 4.94060238822496958910E-10, 3.39623202570838634515E-9, 2.26666899049817806459E-8,
    2.04891858946906374183E-7, 2.89137052083475648297E-6, 6.88975834691682398426E-5, 3.36911647825569408990E-3,
    8.04490411014108831608E-1
)
_I1E_A = (
    2.77791411276104639959E-18, -2.11142121435816608115E-17, 1.55363195773620046921E-16, -1.10559694773538630805E-15,
    7.60068429473540693410E-15, -5.04218550472791168711E-14, 3.22379336594557470981E-13, -1.98397439776494371520E-12,
    1.17361862988909016308E-11, -6.66348972350202774223E-11, 3.62559028155211703701E-10, -1.88724975172282928790E-9,
    9.38153738649577178388E-9, -4.44505912879632808065E-8, 2.00329475355213526229E-7, -8.56872026469545474066E-7,
    3.47025130813767847674E-6, -1.32731636560394358279E-5, 4.78156510755005422638E-5, -1.61760815825896745588E-4,
    5.12285956168575772895E-4, -1.51357245063125314899E-3, 4.15642294431288815669E-3, -1.05640848946261981558E-2,
    2.47264490306265168283E-2, -5.29459812080949914269E-2, 1.02643658689847095384E-1, -1.76416518357834055153E-1,
    2.52587186443633654823E-1
)
_I1E_B = (
    7.51729631084210481353E-18, 4.41434832307170791151E-18, -4.65030536848935832153E-17, -3.20952592199342395980E-17,
    2.96262899764595013876E-16, 3.30820231092092828324E-16, -1.88035477551078244854E-15, -3.81440307243700780478E-15,
    1.04202769841288027642E-14, 4.27244001671195135429E-14, -2.10154184277266431302E-14, -4.08355111109219731823E-13,
    -7.19855177624590851209E-13, 2.03562854414708950722E-12, 1.41258074366137813316E-11, 3.25260358301548823856E-11,
    -1.89749581235054123450E-11, -5.58974346219658380687E-10, -3.83538038596423702205E-9, -2.63146884688951950684E-8,
    -2.51223623787020892529E-7, -3.88256480887769039346E-6, -1.10588938762623716291E-4, -9.76109749136146840777E-3,
    7.78576235018280120474E-1
)
# K0, K1: series in x^2 - 2 on (0, 2] (A) and of exp(x) sqrt(x) K in 8/x - 2 beyond (B)
_K0_A = (
    1.37446543561352307156e-16, 4.25981614279661018399e-14, 1.03496952576338420167e-11, 1.90451637722020886025e-09,
    2.53479107902614945675e-07, 2.28621210311945178607e-05, 1.26461541144692592338e-03, 3.59799365153615016266e-02,
    3.44289899924628486886e-01, -5.35327393233902768720e-01
)
_K0_B = (
    5.30043377268626276149e-18, -1.64758043015242134646e-17, 5.21039150503902756861e-17, -1.67823109680541210385e-16,
    5.51205597852431940784e-16, -1.84859337734377901440e-15, 6.34007647740507060557e-15, -2.22751332699166985548e-14,
    8.03289077536357521100e-14, -2.98009692317273043925e-13, 1.14034058820847496303e-12, -4.51459788337394416547e-12,
    1.85594911495471785253e-11, -7.95748924447710747776e-11, 3.57739728140030116597e-10, -1.69753450938905987466e-09,
    8.57403401741422608519e-09, -4.66048989768794782956e-08, 2.76681363944501510342e-07, -1.83175552271911948767e-06,
    1.39498137188764993662e-05, -1.28495495816278026384e-04, 1.56988388573005337491e-03, -3.14481013119645005427e-02,
    2.44030308206595545468e+00
)
_K1_A = (
    -7.02386347938628759343e-18, -2.42744985051936593393e-15, -6.66690169419932900609e-13,
    -1.41148839263352776110e-10, -2.21338763073472585583e-08, -2.43340614156596823496e-06,
    -1.73028895751305206302e-04, -6.97572385963986435018e-03, -1.22611180822657148235e-01,
    -3.53155960776544875667e-01, 1.52530022733894777053e+00
)
_K1_B = (
    -5.75674448366501715755e-18, 1.79405087314755922667e-17, -5.68946255844285935196e-17, 1.83809354436663880070e-16,
    -6.05704724837331885336e-16, 2.03870316562433424052e-15, -7.01983709041831346144e-15, 2.47715442448130437068e-14,
    -8.97670518232499435011e-14, 3.34841966607842919884e-13, -1.28917396095102890680e-12, 5.13963967348173025100e-12,
    -2.12996783842756842877e-11, 9.21831518760500529508e-11, -4.19035475934189648750e-10, 2.01504975519703286596e-09,
    -1.03457624656780970260e-08, 5.74108412545004946722e-08, -3.50196060308781257119e-07, 2.40648494783721712015e-06,
    -1.93619797416608296024e-05, 1.95215518471351631108e-04, -2.85781685962277938680e-03, 1.03923736576817238437e-01,
    2.72062619048444266945e+00
)
# Cephes ndtr.c: erfc(x) exp(x^2) as P(x)/Q(x) on [1, 8) and R(x)/S(x) from 8 on (Q and S monic)
_ERFC_P = (
    2.46196981473530512524E-10, 5.64189564831068821977E-1, 7.46321056442269912687E0, 4.86371970985681366614E1,
    1.96520832956077098242E2, 5.26445194995477358631E2, 9.34528527171957607540E2, 1.02755188689515710272E3,
    5.57535335369399327526E2
)
_ERFC_Q = (
    1.32281951154744992508E1, 8.67072140885989742329E1, 3.54937778887819891062E2, 9.75708501743205489753E2,
    1.82390916687909736289E3, 2.24633760818710981792E3, 1.65666309194161350182E3, 5.57535340817727675546E2
)
_ERFC_R = (
    5.64189583547755073984E-1, 1.27536670759978104416E0, 5.01905042251180477414E0, 6.16021097993053585195E0,
    7.40974269950448939160E0, 2.97886665372100240670E0
)
_ERFC_S = (
    2.26052863220117276590E0, 9.39603524938001434673E0, 1.20489539808096656605E1, 1.70814450747565897222E1,
    9.60896809063285878198E0, 3.36907645100081516050E0
)
# ndtri: rational functions of (y - 1/2)^2 (0) and of 1/sqrt(-2 log y) for z < 8 (1) and z >= 8 (2)
_NDTRI_P0 = (
    -5.99633501014107895267E1, 9.80010754185999661536E1, -5.66762857469070293439E1, 1.39312609387279679503E1,
    -1.23916583867381258016E0
)
_NDTRI_Q0 = (
    1.00000000000000000000E0, 1.95448858338141759834E0, 4.67627912898881538453E0, 8.63602421390890590575E1,
    -2.25462687854119370527E2, 2.00260212380060660359E2, -8.20372256168333339912E1, 1.59056225126211695515E1,
    -1.18331621121330003142E0
)
_NDTRI_P1 = (
    4.05544892305962419923E0, 3.15251094599893866154E1, 5.71628192246421288162E1, 4.40805073893200834700E1,
    1.46849561928858024014E1, 2.18663306850790267539E0, -1.40256079171354495875E-1, -3.50424626827848203418E-2,
    -8.57456785154685413611E-4
)
_NDTRI_Q1 = (
    1.00000000000000000000E0, 1.57799883256466749731E1, 4.53907635128879210584E1, 4.13172038254672030440E1,
    1.50425385692907503408E1, 2.50464946208309415979E0, -1.42182922854787788574E-1, -3.80806407691578277194E-2,
    -9.33259480895457427372E-4
)
_NDTRI_P2 = (
    3.23774891776946035970E0, 6.91522889068984211695E0, 3.93881025292474443415E0, 1.33303460815807542389E0,
    2.01485389549179081538E-1, 1.23716634817820021358E-2, 3.01581553508235416007E-4, 2.65806974686737550832E-6,
    6.23974539184983293730E-9
)
_NDTRI_Q2 = (
    1.00000000000000000000E0, 6.02427039364742014255E0, 3.67983563856160859403E0, 1.37702099489081330271E0,
    2.16236993594496635890E-1, 1.34204006088543189037E-2, 3.28014464682127739104E-4, 2.89247864745380683936E-6,
    6.79019408009981274425E-9
)


# Bessel J0, J1, Y0, Y1: the asymptotic amplitude (PP/PQ) and phase (QP/QQ) rational functions of 25/x^2 beyond 5;
# below 5, rational functions of x^2 (RP/RQ for J, YP/YQ for Y)
_J0_PP = (
    7.96936729297347051624e-04, 8.28352392107440799803e-02, 1.23953371646414299388e+00, 5.44725003058768775090e+00,
    8.74716500199817011941e+00, 5.30324038235394892183e+00, 9.99999999999999997821e-01
)
_J0_PQ = (
    9.24408810558863637013e-04, 8.56288474354474431428e-02, 1.25352743901058953537e+00, 5.47097740330417105182e+00,
    8.76190883237069594232e+00, 5.30605288235394617618e+00, 1.00000000000000000218e+00
)
_J0_QP = (
    -1.13663838898469149931e-02, -1.28252718670509318512e+00, -1.95539544257735972385e+01,
    -9.32060152123768231369e+01, -1.77681167980488050595e+02, -1.47077505154951170175e+02,
    -5.14105326766599330220e+01, -6.05014350600728481186e+00
)
_J0_QQ = (
    6.43178256118178023184e+01, 8.56430025976980587198e+02, 3.88240183605401609683e+03, 7.24046774195652478189e+03,
    5.93072701187316984827e+03, 2.06209331660327847417e+03, 2.42005740240291393179e+02
)
_J0_RP = (
    -4.79443220978201773821e+09, 1.95617491946556577543e+12, -2.49248344360967716204e+14, 9.70862251047306323952e+15
)
_J0_RQ = (
    4.99563147152651017219e+02, 1.73785401676374683123e+05, 4.84409658339962045305e+07, 1.11855537045356834862e+10,
    2.11277520115489217587e+12, 3.10518229857422583814e+14, 3.18121955943204943306e+16, 1.71086294081043136091e+18
)
_J1_PP = (
    7.62125616208173112003e-04, 7.31397056940917570436e-02, 1.12719608129684925192e+00, 5.11207951146807644818e+00,
    8.42404590141772420927e+00, 5.21451598682361504063e+00, 1.00000000000000000254e+00
)
_J1_PQ = (
    5.71323128072548699714e-04, 6.88455908754495404082e-02, 1.10514232634061696926e+00, 5.07386386128601488557e+00,
    8.39985554327604159757e+00, 5.20982848682361821619e+00, 9.99999999999999997461e-01
)
_J1_QP = (
    5.10862594750176621635e-02, 4.98213872951233449420e+00, 7.58238284132545283818e+01, 3.66779609360150777800e+02,
    7.10856304998926107277e+02, 5.97489612400613639965e+02, 2.11688757100572135698e+02, 2.52070205858023719784e+01
)
_J1_QQ = (
    7.42373277035675149943e+01, 1.05644886038262816351e+03, 4.98641058337653607651e+03, 9.56231892404756170795e+03,
    7.99704160447350683650e+03, 2.82619278517639096600e+03, 3.36093607810698293419e+02
)
_J1_RP = (
    -8.99971225705559398224e+08, 4.52228297998194034323e+11, -7.27494245221818276015e+13, 3.68295732863852883286e+15
)
_J1_RQ = (
    6.20836478118054335476e+02, 2.56987256757748830383e+05, 8.35146791431949253037e+07, 2.21511595479792499675e+10,
    4.74914122079991414898e+12, 7.84369607876235854894e+14, 8.95222336184627338078e+16, 5.32278620332680085395e+18
)
_Y0_YP = (
    1.55924367855235737965e+04, -1.46639295903971606143e+07, 5.43526477051876500413e+09, -9.82136065717911466409e+11,
    8.75906394395366999549e+13, -3.46628303384729719441e+15, 4.42733268572569800351e+16, -1.84950800436986690637e+16
)
_Y0_YQ = (
    1.04128353664259848412e+03, 6.26107330137134956842e+05, 2.68919633393814121987e+08, 8.64002487103935000337e+10,
    2.02979612750105546709e+13, 3.17157752842975028269e+15, 2.50596256172653059228e+17
)
_Y1_YP = (
    1.26320474790178026440e+09, -6.47355876379160291031e+11, 1.14509511541823727583e+14, -8.12770255501325109621e+15,
    2.02439475713594898196e+17, -7.78877196265950026825e+17
)
_Y1_YQ = (
    5.94301592346128195359e+02, 2.35564092943068577943e+05, 7.34811944459721705660e+07, 1.87601316108706159478e+10,
    3.88231277496238566008e+12, 6.20557727146953693363e+14, 6.87141087355300489866e+16, 3.97270608116560655612e+18
)
# Airy Ai: asymptotic rational functions for x >= 2.09 (AN/AD) and x < -2.09 (AFN/AFD, AGN/AGD)
_AIRY_AN = (
    3.46538101525629032477e-01, 1.20075952739645805542e+01, 7.62796053615234516538e+01, 1.68089224934630576269e+02,
    1.59756391350164413639e+02, 7.05360906840444183113e+01, 1.40264691163389668864e+01, 9.99999999999999995305e-01
)
_AIRY_AD = (
    5.67594532638770212846e-01, 1.47562562584847203173e+01, 8.45138970141474626562e+01, 1.77318088145400459522e+02,
    1.64234692871529701831e+02, 7.14778400825575695274e+01, 1.40959135607834029598e+01, 1.00000000000000000470e+00
)
_AIRY_AFN = (
    -1.31696323418331795333e-01, -6.26456544431912369773e-01, -6.93158036036933542233e-01,
    -2.79779981545119124951e-01, -4.91900132609500318020e-02, -4.06265923594885404393e-03,
    -1.59276496239262096340e-04, -2.77649108155232920844e-06, -1.67787698489114633780e-08
)
_AIRY_AFD = (
    1.33560420706553243746e+01, 3.26825032795224613948e+01, 2.67367040941499554804e+01, 9.18707402907259625840e+00,
    1.47529146771666414581e+00, 1.15687173795188044134e-01, 4.40291641615211203805e-03, 7.54720348287414296618e-05,
    4.51850092970580378464e-07
)
_AIRY_AGN = (
    1.97339932091685679179e-02, 3.91103029615688277255e-01, 1.06579897599595591108e+00, 9.39169229816650230044e-01,
    3.51465656105547619242e-01, 6.33888919628925490927e-02, 5.85804113048388458567e-03, 2.82851600836737019778e-04,
    6.98793669997260967291e-06, 8.11789239554389293311e-08, 3.41551784765923618484e-10
)
_AIRY_AGD = (
    9.30892908077441974853e+00, 1.98352928718312140417e+01, 1.55646628932864612953e+01, 5.47686069422975497931e+00,
    9.54293611618961883998e-01, 8.64580826352392193095e-02, 4.12656523824222607191e-03, 1.01259085116509135510e-04,
    1.17166733214413521882e-06, 4.91834570062930015649e-09
)


# ---------------------------------------------------------------- modified Bessel functions (i0, i1, k0, k1)
# Chebyshev series for exp(-x) I(x) on [0, 8] in x/2 - 2 and for exp(-x) sqrt(x) I(x) on (8, inf) in 32/x - 2;
# for K, series in x^2 - 2 on (0, 2] and exp(x) sqrt(x) K(x) in 8/x - 2 beyond. torch takes |x| for I.


def _i0e(ax: Tensor) -> Tensor:
    """exp(-x) I0(x) for x = |input|."""
    return (ax <= 8.0).where(_chebyshev(ax * 0.5 - 2.0, _I0E_A), _chebyshev(32.0 / ax - 2.0, _I0E_B) / ax.sqrt())


def _i1e_abs(ax: Tensor) -> Tensor:
    """exp(-x) I1(x) for x = |input| (odd: the caller restores the sign)."""
    return (ax <= 8.0).where(_chebyshev(ax * 0.5 - 2.0, _I1E_A) * ax, _chebyshev(32.0 / ax - 2.0, _I1E_B) / ax.sqrt())


def _odd(x: Tensor, value: Tensor) -> Tensor:
    return (x < 0).where(-value, value)


@lowers("i0.default", "special_modified_bessel_i0.default", pointwise=True)
def i0(x: Tensor) -> Tensor:
    ax = x.abs()
    # the CPU multiplies by exp(x) before dividing by sqrt(x): inf stays nan at x = inf, as there
    return (ax <= 8.0).where(ax.exp() * _chebyshev(ax * 0.5 - 2.0, _I0E_A),
                             ax.exp() * _chebyshev(32.0 / ax - 2.0, _I0E_B) / ax.sqrt())


@lowers("special_i0e.default", pointwise=True)
def i0e(x: Tensor) -> Tensor:
    return _i0e(x.abs())


@lowers("special_i1.default", "special_modified_bessel_i1.default", pointwise=True)
def i1(x: Tensor) -> Tensor:
    ax = x.abs()
    out = (ax <= 8.0).where(ax.exp() * ax * _chebyshev(ax * 0.5 - 2.0, _I1E_A),
                            ax.exp() * _chebyshev(32.0 / ax - 2.0, _I1E_B) / ax.sqrt())
    return _odd(x, out)


@lowers("special_i1e.default", pointwise=True)
def i1e(x: Tensor) -> Tensor:
    return _odd(x, _i1e_abs(x.abs()))


def _k_domain(x: Tensor, value: Tensor) -> Tensor:
    """K0 and K1 have a pole at 0 and are undefined below."""
    return (x == 0).where(INF, (x < 0).where(NAN, value))


def _k0_small(x: Tensor) -> Tensor:
    """K0(x) for 0 < x <= 2."""
    return _chebyshev(x * x - 2.0, _K0_A) - (x * 0.5).log() * i0(x)


def _k1_small(x: Tensor) -> Tensor:
    """K1(x) for 0 < x <= 2."""
    return (x * 0.5).log() * i1(x) + _chebyshev(x * x - 2.0, _K1_A) / x


@lowers("special_modified_bessel_k0.default", pointwise=True)
def modified_bessel_k0(x: Tensor) -> Tensor:
    large = (-x).exp() * _chebyshev(8.0 / x - 2.0, _K0_B) / x.sqrt()
    return _k_domain(x, (x <= 2.0).where(_k0_small(x), large))


@lowers("special_modified_bessel_k1.default", pointwise=True)
def modified_bessel_k1(x: Tensor) -> Tensor:
    large = (-x).exp() * _chebyshev(8.0 / x - 2.0, _K1_B) / x.sqrt()
    return _k_domain(x, (x <= 2.0).where(_k1_small(x), large))


@lowers("special_scaled_modified_bessel_k0.default", pointwise=True)
def scaled_modified_bessel_k0(x: Tensor) -> Tensor:
    large = _chebyshev(8.0 / x - 2.0, _K0_B) / x.sqrt()
    return _k_domain(x, (x <= 2.0).where(_k0_small(x) * x.exp(), large))


@lowers("special_scaled_modified_bessel_k1.default", pointwise=True)
def scaled_modified_bessel_k1(x: Tensor) -> Tensor:
    large = _chebyshev(8.0 / x - 2.0, _K1_B) / x.sqrt()
    return _k_domain(x, (x <= 2.0).where(_k1_small(x) * x.exp(), large))


# ---------------------------------------------------------------- error function family

_SQRT1_2 = 0.70710678118654752440
_RSQRT_PI = 0.56418958354775628695


def _erfcx_nonneg(x: Tensor) -> Tensor:
    """exp(x^2) erfc(x) for x >= 0. Below 1, from erf (no cancellation there: erfc(1) = 0.157); on [1, 8) and
    [8, 50] Cephes' rational approximations of erfc(x) exp(x^2); past 50 the continued fraction torch uses
    (in its 5-term form, and 1/(x sqrt(pi)) past 5e7 where x^4 would overflow)."""
    small = (x * x).exp() * (1 - x.erf())
    mid = _ratio(x, _ERFC_P, _ERFC_Q, monic_den=True)
    big = _poly(x, _ERFC_R) / _poly(x, _ERFC_S, monic=True)
    xx = x * x
    cf = _RSQRT_PI * (xx * (xx + 4.5) + 2) / (x * (xx * (xx + 5) + 3.75))
    far = (x > 5e7).where(_RSQRT_PI / x, cf)
    return (x < 1).where(small, (x < 8).where(mid, (x <= 50).where(big, far)))


@lowers("special_erfcx.default", pointwise=True)
def erfcx(x: Tensor) -> Tensor:
    pos = _erfcx_nonneg(x.abs())
    twice = (x * x).exp() * 2
    # erfcx(-x) = 2 exp(x^2) - erfcx(x); torch stops subtracting below -6.1 and calls it inf below -26.7
    neg = (x < -26.7).where(INF, (x < -6.1).where(twice, twice - pos))
    return _isnan(x).where(x, (x < 0).where(neg, pos))


def _erfc(t: Tensor) -> Tensor:
    """erfc(t) without the cancellation of 1 - erf(t) for large t."""
    return (t < 1).where(1 - t.erf(), (-(t * t)).exp() * _erfcx_nonneg(t.abs()))


@lowers("special_log_ndtr.default", pointwise=True)
def log_ndtr(x: Tensor) -> Tensor:
    t = x * _SQRT1_2
    lower = (erfcx(-t) / 2).log() - t * t  # log of a tiny tail without underflow
    return (x < -1).where(lower, (-_erfc(t) / 2).log1p())


@lowers("special_ndtri.default", pointwise=True)
def ndtri(y0: Tensor) -> Tensor:
    """The inverse of the normal CDF: a rational function of y - 1/2 in the middle, and of 1/z with
    z = sqrt(-2 log y) in the tails (two pieces, split at z = 8), as Cephes' ndtri."""
    tail = 0.13533528323661269189  # exp(-2)
    upper = y0 > 1 - tail
    y = upper.where(1 - y0, y0)
    ym = y - 0.5
    y2 = ym * ym
    central = (ym + ym * (y2 * _poly(y2, _NDTRI_P0) / _poly(y2, _NDTRI_Q0))) * 2.50662827463100050242
    z = (-2.0 * y.log()).sqrt()
    x0 = z - z.log() / z
    r = 1 / z
    x1 = (z < 8).where(r * _ratio(r, _NDTRI_P1, _NDTRI_Q1), r * _ratio(r, _NDTRI_P2, _NDTRI_Q2))
    tails = upper.where(x0 - x1, x1 - x0)
    out = (y > tail).where(central, tails)
    out = (y0 == 0).where(-INF, (y0 == 1).where(INF, out))
    return ((y0 < 0) | (y0 > 1)).where(NAN, out)


_ERFINV_A = (-0.140543331, 0.914624893, -1.645349621, 0.886226899)
_ERFINV_B = (0.012229801, -0.329097515, 1.442710462, -2.118377725)
_ERFINV_C = (1.641345311, 3.429567803, -1.624906493, -1.970840454)
_ERFINV_D = (1.637067800, 3.543889200)


@lowers("erfinv.default", pointwise=True)
def erfinv(y: Tensor) -> Tensor:
    """A rational first guess (central and tail pieces, the ones torch starts from) refined by two Newton steps.
    In the tails the steps solve erfc(x) = 1 - |y| rather than erf(x) = |y|: 1 - |y| is exact there, while
    erf(x) - y cancels to a few ulps of 1 and would leave x wrong in its fourth digit (torch's CPU result is
    accurate to the last digit there)."""
    ay = y.abs()
    z = ay * ay
    central = ay * _poly(z, _ERFINV_A) / (_poly(z, _ERFINV_B) * z + 1)
    w = (-((1 - ay) / 2).log()).sqrt()
    tail = _poly(w, _ERFINV_C) / (_poly(w, _ERFINV_D) * w + 1)
    in_tail = ay > 0.7
    x = in_tail.where(tail, central)
    for _ in range(2):
        slope = (2 * _RSQRT_PI) * (-(x * x)).exp()
        x = in_tail.where(x + (_erfc(x) - (1 - ay)) / slope, x - (x.erf() - ay) / slope)
    x = (ay == 1).where(INF, x)
    return (ay > 1).where(NAN, (y < 0).where(-x, x))


# ---------------------------------------------------------------- gamma family: digamma, polygamma, zeta

_PSI_10 = 2.25175258906672110764
_DIGAMMA_A = (8.33333333333333333333e-2, -2.10927960927960927961e-2, 7.57575757575757575758e-3,
              -4.16666666666666666667e-3, 3.96825396825396825397e-3, -8.33333333333333333333e-3,
              8.33333333333333333333e-2)


def _cot_pi(x: Tensor) -> Tensor:
    """cot(pi x), accurate for any x: pi x itself would lose the fraction of a large x, so reduce x to
    r = x - round(x) in [-1/2, 1/2] first (exact in floating point: cot has period 1)."""
    r = x - (x + 0.5).floor()
    return 1 / (r * math.pi).tan()


def _digamma_pos(x: Tensor) -> Tensor:
    """psi(x) for x > 0 (and inf, nan): the recurrence psi(x) = psi(x + 1) - 1/x up to x >= 10 (at most ten
    steps, unrolled), then the asymptotic series; psi(10) exactly where x lands on 10."""
    acc = _full(x, 0.0)
    for _ in range(10):
        below = x < 10
        acc = below.where(acc - 1 / x, acc)
        x = below.where(x + 1, x)
    z = 1 / (x * x)
    tail = (x < 1e17).where(z * _poly(z, _DIGAMMA_A), 0.0)
    return (x == 10).where(acc + _PSI_10, acc + x.log() - 0.5 / x - tail)


@lowers("digamma.default", pointwise=True)
def digamma(x: Tensor) -> Tensor:
    neg = x < 0
    out = _digamma_pos(neg.where(1 - x, x))
    # the reflection psi(x) = psi(1 - x) - pi cot(pi x), with cot written as torch writes it (from the fraction
    # of x, in double even for float32; torch's own rounding decides the values right next to the poles)
    xw = _wide(x)
    cot = math.pi / ((xw - xw.trunc()) * math.pi).tan()
    out = neg.where(out - cot.cast(x.dtype), out)
    out = (neg & (x == x.trunc())).where(NAN, out)  # poles at the negative integers
    return (x == 0).where(_negative_bit(x).where(INF, -INF), out)


def _trigamma(x: Tensor) -> Tensor:
    """psi'(x): the reflection below 1/2 (with sin(pi x) as torch writes it), six recurrence steps, then the
    asymptotic series."""
    reflect = x < 0.5
    s = (x * math.pi).sin()
    acc = reflect.where(-(math.pi * math.pi) / (s * s), 0.0)
    x = reflect.where(1 - x, x)
    for _ in range(6):
        acc = acc + 1 / (x * x)
        x = x + 1
    ixx = 1 / (x * x)
    acc = acc + (1 + 1 / (2 * x) + ixx * (1 / 6 - ixx * (1 / 30 - ixx * (1 / 42)))) / x
    return reflect.where(-acc, acc)


# The Euler-Maclaurin tail of the Hurwitz zeta: (2k)! / B_2k
_ZETA_A = (12.0, -720.0, 30240.0, -1209600.0, 47900160.0, -1.8924375803183791606e9, 7.47242496e10,
           -2.950130727918164224e12, 1.1646782814350067249e14, -4.5979787224074726105e15, 1.8152105401943546773e17,
           -7.1661652561756670113e18)
# The direct sum runs until a = q + i > 9 (at least 9 terms): q > -ZETA_SHIFTS is covered, below gives nan.
ZETA_SHIFTS = 32
_MACHEP = 1.11022302462515654042e-16


def _zeta(x: Tensor, q: Tensor) -> Tensor:
    """The Hurwitz zeta function sum_k (k + q)^-x, as Cephes computes it: a direct sum of the first terms until
    q + i > 9, then the Euler-Maclaurin tail. Like the CPU, it stops at the first term below MACHEP times the
    sum: that decides the value where terms are 0 or inf (x = inf)."""
    s = q.pow(-x)
    a, b = q, _full(q, 0.0)
    done = _full(q, 0.0) != 0
    for i in range(ZETA_SHIFTS):
        go = ~done if i < 9 else (a <= 9) & ~done  # the first nine always; more only while a <= 9
        a1 = a + 1
        b1 = a1.pow(-x)
        s1 = s + b1
        a, b, s = go.where(a1, a), go.where(b1, b), go.where(s1, s)
        done = done | (go & (-_MACHEP * s1 < b1) & (b1 < _MACHEP * s1))
    w = a
    s = done.where(s, s + b * w / (x - 1) - 0.5 * b)
    fac, k = _full(q, 1.0), 0.0
    for coeff in _ZETA_A:
        fac = fac * (x + k)
        b = b / w
        t = fac * b / coeff
        s1 = s + t
        s = done.where(s, s1)
        done = done | ((t / s1).abs() < _MACHEP)
        fac = fac * (x + k + 1)
        b = b / w
        k += 2
    s = (~done & (a <= 9)).where(NAN, s)  # q below -ZETA_SHIFTS: the sum did not reach its tail
    undefined = (q <= 0) & (x != x.floor())
    s = ((q <= 0) & (q == q.floor())).where(INF, undefined.where(NAN, s))
    return (x == 1).where(INF, (x < 1).where(NAN, s))


@lowers("special_zeta.default", "special_zeta.self_scalar", "special_zeta.other_scalar", pointwise=True)
def zeta(x: Tensor | Scalar, q: Tensor | Scalar) -> Tensor:
    like = x if isinstance(x, Tensor) else q
    xt = x if isinstance(x, Tensor) else _full(like, float(x))  # type: ignore[arg-type]
    qt = q if isinstance(q, Tensor) else _full(like, float(q))  # type: ignore[arg-type]
    return _zeta(_wide(xt), _wide(qt)).cast(like.dtype)


def _cot_derivative(n: int, c: Tensor) -> Tensor:
    """d^n/dx^n cot(pi x) as a polynomial in c = cot(pi x): each derivative maps P(c) to -pi (1 + c^2) P'(c)."""
    poly = [0.0, 1.0]  # coefficients of P, lowest power first: P(c) = c
    for _ in range(n):
        deriv = [k * poly[k] for k in range(1, len(poly))]
        nxt = [0.0] * (len(deriv) + 2)
        for k, d in enumerate(deriv):
            nxt[k] -= math.pi * d
            nxt[k + 2] -= math.pi * d
        poly = nxt
    return _poly(c, poly[::-1]) if len(poly) > 1 else _full(c, poly[0])


@lowers("polygamma.default", pointwise=True)
def polygamma(n: int, x: Tensor) -> Tensor:
    if n == 0:
        return digamma(x)
    if n == 1:
        return _trigamma(x)
    xw = _wide(x)
    fac = float(math.factorial(n))
    sign = 1.0 if n % 2 else -1.0

    def direct(v: Tensor) -> Tensor:  # psi^(n)(v) = (-1)^(n+1) n! zeta(n + 1, v)
        return _zeta(_full(v, float(n + 1)), v) * (sign * fac)

    # For x < 0 the direct sum would need ~|x| terms: reflect instead,
    # psi^(n)(x) = (-1)^n psi^(n)(1 - x) - pi d^n/dx^n cot(pi x)
    neg = xw < 0
    reflected = direct(1 - xw) * (1.0 if n % 2 == 0 else -1.0) - math.pi * _cot_derivative(n, _cot_pi(xw))
    out = neg.where(reflected, direct(neg.where(1.0, xw)))
    out = ((xw <= 0) & (xw == xw.floor())).where(sign * INF, out)  # the poles, signed as torch's
    return out.cast(x.dtype)


# ---------------------------------------------------------------- Bessel functions of the first and second kind

_PI_4, _3PI_4 = 0.785398163397448309615660845819875721, 2.356194490192344928846982537459627163
_SQRT_2_PI = 0.797884560802865355879892119868763737  # sqrt(2 / pi)
_2_PI = 0.636619772367581343075535053490057448


def _hankel(x: Tensor, pp: Sequence[float], pq: Sequence[float], qp: Sequence[float], qq: Sequence[float],
            phase: float, second_kind: bool) -> Tensor:
    """The large-x form sqrt(2/(pi x)) (P cos(x - phase) - (5/x) Q sin(x - phase)) of J (sin and cos swapped,
    plus sign, for Y), with P and Q rational functions of 25/x^2."""
    z = 25.0 / (x * x)
    p, q = _ratio(z, pp, pq), _ratio(z, qp, qq)
    c, s = (x - phase).cos(), (x - phase).sin()
    wave = p * s + 5.0 / x * q * c if second_kind else p * c - 5.0 / x * q * s
    return wave * _SQRT_2_PI / x.sqrt()


def _j0_abs(x: Tensor) -> Tensor:
    """J0(x) for x >= 0: a rational function of x^2 with J0's first two zeros factored out, up to 5."""
    xx = x * x
    near = (xx - 5.78318596294678452118) * (xx - 30.4712623436620863991) * _ratio(xx, _J0_RP, _J0_RQ)
    near = (x < 1e-5).where(1 - xx / 4.0, near)
    return (x <= 5.0).where(near, _hankel(x, _J0_PP, _J0_PQ, _J0_QP, _J0_QQ, _PI_4, False))


def _j1_abs(x: Tensor) -> Tensor:
    xx = x * x
    near = _ratio(xx, _J1_RP, _J1_RQ) * x * (xx - 14.6819706421238932572) * (xx - 49.2184563216946036703)
    return (x <= 5.0).where(near, _hankel(x, _J1_PP, _J1_PQ, _J1_QP, _J1_QQ, _3PI_4, False))


@lowers("special_bessel_j0.default", pointwise=True)
def bessel_j0(x: Tensor) -> Tensor:
    return _j0_abs(x.abs())


@lowers("special_bessel_j1.default", pointwise=True)
def bessel_j1(x: Tensor) -> Tensor:
    return _odd(x, _j1_abs(x.abs()))


def _y_domain(x: Tensor, value: Tensor) -> Tensor:
    return (x == 0).where(-INF, (x < 0).where(NAN, value))


@lowers("special_bessel_y0.default", pointwise=True)
def bessel_y0(x: Tensor) -> Tensor:
    near = _ratio(x * x, _Y0_YP, _Y0_YQ) + _2_PI * x.log() * _j0_abs(x)
    return _y_domain(x, (x <= 5.0).where(near, _hankel(x, _J0_PP, _J0_PQ, _J0_QP, _J0_QQ, _PI_4, True)))


@lowers("special_bessel_y1.default", pointwise=True)
def bessel_y1(x: Tensor) -> Tensor:
    near = x * _ratio(x * x, _Y1_YP, _Y1_YQ) + _2_PI * (_j1_abs(x) * x.log() - 1 / x)
    return _y_domain(x, (x <= 5.0).where(near, _hankel(x, _J1_PP, _J1_PQ, _J1_QP, _J1_QQ, _3PI_4, True)))


@lowers("special_spherical_bessel_j0.default", pointwise=True)
def spherical_bessel_j0(x: Tensor) -> Tensor:
    """sin(x)/x, from its Taylor series below 1/2 (no 0/0 at 0)."""
    xx = x * x
    series = _poly(xx, [(-1) ** k / math.factorial(2 * k + 1) for k in range(6, -1, -1)])
    return _isinf(x).where(0.0, (x.abs() < 0.5).where(series, x.sin() / x))


_AIRY_AI0, _AIRY_AI0_SLOPE = 0.355028053887817239260, 0.258819403792806798405  # Ai(0), -Ai'(0)
AIRY_SERIES_TERMS = 14  # |x^3| < 9.2 where the series is used: 14 terms reach double precision


@lowers("special_airy_ai.default", pointwise=True)
def airy_ai(x: Tensor) -> Tensor:
    """Ai(x): its Maclaurin series f(x^3) Ai(0) + g(x^3) x Ai'(0) on (-2.09, 2.09), and Cephes' asymptotic
    rational forms in zeta = 2/3 |x|^1.5 beyond: oscillating below -2.09, decaying above 2.09."""
    # below -2.09
    ax = x.abs()
    zeta = 2.0 * ax * ax.sqrt() / 3.0
    z = 1 / zeta
    zz = z * z
    t = zeta + 0.25 * math.pi
    amplitude = 1 + zz * _ratio(zz, _AIRY_AFN, _AIRY_AFD)
    phase = z * _ratio(zz, _AIRY_AGN, _AIRY_AGD)
    oscillating = _RSQRT_PI / ax.sqrt().sqrt() * (t.sin() * amplitude - t.cos() * phase)
    # from 2.09 on
    decaying = _RSQRT_PI * _ratio(z, _AIRY_AN, _AIRY_AD) / (2.0 * ax.sqrt().sqrt() * zeta.exp())
    # in between: f = sum x^3k / (2*3)(5*6)..., g = sum x^(3k+1) / (3*4)(6*7)...
    cube = x * x * x
    m, n, f, g, k = _full(x, 1.0), x, _full(x, 1.0), x, 1.0
    for _ in range(AIRY_SERIES_TERMS):
        m = m * cube / ((k + 1) * (k + 2))
        n = n * cube / ((k + 2) * (k + 3))
        f, g, k = f + m, g + n, k + 3
    series = _AIRY_AI0 * f - _AIRY_AI0_SLOPE * g
    out = (x < -2.09).where(oscillating, (x >= 2.09).where(decaying, series))
    return _isinf(x).where(NAN, (x > 103.892).where(0.0, out))


@lowers("angle.default", pointwise=True)
def angle(x: Tensor) -> Tensor:
    """The argument of a real number: pi for negatives, 0 otherwise (nan stays nan). Complex inputs are not
    supported on the device."""
    if not x.dtype.is_float:
        x = x.cast(dtypes.float32)
    return _isnan(x).where(x, (x < 0).where(math.pi, 0.0))


# ---------------------------------------------------------------- orthogonal polynomials of a tensor degree n
# torch evaluates them by their three-term recurrences, looping n times (or a closed trigonometric form inside
# (-1, 1) for the Chebyshev kinds), stopping early once the value is nan. Here the recurrence is unrolled to a
# fixed number of steps and masked per element; beyond that:
#   Chebyshev T/U/V/W (and shifted): |x| < 1 uses the trigonometric form as torch does, |x| > 1 the hyperbolic
#     closed form (in double where the device has it), with torch's overflow behaviour (inf, then nan);
#   Hermite H/He: torch returns nan past n = 128 (float) / 512 (double), and its recurrence has overflowed to
#     nan long before that for every x (measured: past n = 52 / 271 for H, 60 / 304 for He), so the unrolled
#     steps stop a little above those and larger n give nan;
#   Laguerre and Legendre stay finite for ever on [0, inf) and [-1, 1]: n > POLY_STEPS gives nan (a known gap).

CHEBYSHEV_STEPS = 64
POLY_STEPS = 128
_HERMITE_STEPS = {dtypes.float32: 64, dtypes.float64: 320}


def _degree(n: Tensor) -> Tensor:
    """torch's int64 conversion of the degree, kept in floating point: the integer part, and (as an x86
    conversion of nan, inf or anything out of range gives INT64_MIN) -1 where it is not a representable int."""
    return ((n == n) & (n.abs() < 9.2e18)).where(n.trunc(), -1.0)


def _even(n: Tensor) -> Tensor:
    half = n * 0.5
    return half.floor() == half


def _recurrence(n: Tensor, p0: Tensor, p1: Tensor, step: Callable[[int, Tensor, Tensor], Tensor], steps: int,
                stop_at_nan: bool = True) -> Tensor:
    """p_n for n <= steps, with p_k = step(k, p_{k-1}, p_{k-2}), each step masked to the elements that need it
    (and, like torch's loops, to those whose last value is not nan)."""
    p, q = p0, p1
    for k in range(2, steps + 1):
        go = n >= k
        if stop_at_nan:
            go = go & (q == q)
        r = step(k, q, p)
        p, q = go.where(q, p), go.where(r, q)
    return (n == 0).where(p0, q)


def _as_tensors(x: Tensor | Scalar, n: Tensor | Scalar) -> tuple[Tensor, Tensor]:
    """Both operands as tensors of the broadcast shape (a Python scalar either side: the x_scalar and n_scalar
    overloads)."""
    like = x if isinstance(x, Tensor) else n
    assert isinstance(like, Tensor)
    xt = x if isinstance(x, Tensor) else _full(like, float(x))
    nt = n if isinstance(n, Tensor) else _full(like, float(n))
    shape = _broadcast_shape(xt.shape, nt.shape)
    return xt._broadcast_to(shape), nt._broadcast_to(shape)


def _chebyshev_hyperbolic(kind: str, y: Tensor, n: Tensor) -> Tensor:
    """The Chebyshev polynomial of this kind at |y| > 1 from its closed form, overflowing as torch's recurrence
    does: inf once the value overflows, nan once the one two steps back did (inf - inf)."""
    dt = y.dtype
    yw, nw = _wide(y), _wide(n)
    theta = yw.abs().acosh()
    flip = kind in "VW"  # V(-y) = (-1)^n W(y), W(-y) = (-1)^n V(y)
    own = (yw > 0) | (not flip)

    def value(m: Tensor) -> Tensor:
        if kind == "T":
            v = (m * theta).cosh()
        elif kind == "U":
            v = ((m + 1) * theta).sinh() / theta.sinh()
        else:
            as_v = ((m + 0.5) * theta).cosh() / (theta * 0.5).cosh()
            as_w = ((m + 0.5) * theta).sinh() / (theta * 0.5).sinh()
            v = own.where(as_v, as_w) if kind == "V" else own.where(as_w, as_v)
        return ((yw < 0) & ~_even(m)).where(-v, v).cast(dt)

    now, before = value(nw), value(nw - 2)
    return _isinf(before).where(NAN, now)


def _chebyshev_kind(kind: str, y: Tensor, n: Tensor, trig_from: int) -> Tensor:
    """T, U, V or W of degree n at y (y = 2x - 1 for the shifted ones), as torch computes them."""
    n = _degree(n)
    ay, even = y.abs(), _even(n)
    first = {"T": y, "U": y + y, "V": y + y - 1, "W": y + y + 1}[kind]
    out = _recurrence(n, _full(y, 1.0), first, lambda k, q, p: _fms(y + y, q, p), CHEBYSHEV_STEPS)
    out = ((n > CHEBYSHEV_STEPS) & (ay > 1)).where(_chebyshev_hyperbolic(kind, y, n), out)
    # inside (-1, 1), past a few steps: the trigonometric forms, and their limits where the divisor is 0. The
    # argument n acos(y) is large, so every ulp of it shows: as on the CPU, acos, sin and cos are correctly
    # rounded (here through double) and the product n acos(y) is rounded to y's dtype before cos sees it (an
    # explicit conversion: OpenCL may otherwise fuse the multiply into cos's range reduction, unrounded).
    a = _rounded(y, Tensor.acos)

    def cos(m: Tensor) -> Tensor:
        return _rounded((_wide(m) * _wide(a)).cast(y.dtype), Tensor.cos)

    def sin(m: Tensor) -> Tensor:
        return _rounded((_wide(m) * _wide(a)).cast(y.dtype), Tensor.sin)

    odd_sign = even.where(_full(y, 1.0), -1.0)
    if kind == "T":
        trig = cos(n)
        edge = ((y > 0) | even).where(_full(y, 1.0), -1.0)
    elif kind == "U":
        s = sin(_full(y, 1.0))
        trig = (s != 0).where(sin(n + 1) / s, (n + 1) * cos(n + 1) / y)
        edge = ((y > 0) | even).where(n + 1, -(n + 1))
    elif kind == "V":
        trig = (sin(_full(y, 0.5)) != 1).where(cos(n + 0.5) / cos(_full(y, 0.5)), odd_sign * (n + n + 1))
        edge = (y > 0).where(_full(y, 1.0), odd_sign * (n + n + 1))
    else:
        whole = (y > 0).where(n + n + 1, odd_sign)
        trig = (cos(_full(y, 0.5)) != 1).where(sin(n + 0.5) / sin(_full(y, 0.5)), whole)
        edge = whole
    out = ((n > trig_from) & (ay < 1)).where(trig, out)
    out = (ay == 1).where(edge, out)
    return (n < 0).where(0.0, out)


def _register_chebyshev(kind: str) -> None:
    low = kind.lower()

    def standard(x: Tensor | Scalar, n: Tensor | Scalar) -> Tensor:
        xt, nt = _as_tensors(x, n)
        return _chebyshev_kind(kind, xt, nt, 6 if kind == "T" else 8)

    def shifted(x: Tensor | Scalar, n: Tensor | Scalar) -> Tensor:
        xt, nt = _as_tensors(x, n)
        return _chebyshev_kind(kind, xt + xt - 1, nt, 4 if kind == "W" else 6)

    for name, fn in ((f"special_chebyshev_polynomial_{low}", standard),
                     (f"special_shifted_chebyshev_polynomial_{low}", shifted)):
        lowers(f"{name}.default", f"{name}.x_scalar", f"{name}.n_scalar", pointwise=True)(fn)


for _kind in "TUVW":
    _register_chebyshev(_kind)


def _hermite(x: Tensor, n: Tensor, probabilists: bool) -> Tensor:
    n = _degree(n)
    steps = _HERMITE_STEPS.get(x.dtype, 64)
    if probabilists:  # He_k = x He_{k-1} - (k - 1) He_{k-2}
        out = _recurrence(n, _full(x, 1.0), x, lambda k, q, p: _fms(x, q, p * (k - 1)), steps, stop_at_nan=False)
    else:  # H_k = 2x H_{k-1} - 2(k - 1) H_{k-2}
        out = _recurrence(n, _full(x, 1.0), x + x, lambda k, q, p: _fms(x + x, q, p * (2 * k - 2)), steps,
                          stop_at_nan=False)
    return (n < 0).where(0.0, (n > steps).where(NAN, out))


@lowers("special_hermite_polynomial_h.default", "special_hermite_polynomial_h.x_scalar",
        "special_hermite_polynomial_h.n_scalar", pointwise=True)
def hermite_polynomial_h(x: Tensor | Scalar, n: Tensor | Scalar) -> Tensor:
    return _hermite(*_as_tensors(x, n), probabilists=False)


@lowers("special_hermite_polynomial_he.default", "special_hermite_polynomial_he.x_scalar",
        "special_hermite_polynomial_he.n_scalar", pointwise=True)
def hermite_polynomial_he(x: Tensor | Scalar, n: Tensor | Scalar) -> Tensor:
    return _hermite(*_as_tensors(x, n), probabilists=True)


@lowers("special_laguerre_polynomial_l.default", "special_laguerre_polynomial_l.x_scalar",
        "special_laguerre_polynomial_l.n_scalar", pointwise=True)
def laguerre_polynomial_l(x: Tensor | Scalar, n: Tensor | Scalar) -> Tensor:
    xt, nt = _as_tensors(x, n)
    nt = _degree(nt)
    # L_k = ((2k - 1 - x) L_{k-1} - (k - 1) L_{k-2}) / k, with torch's grouping of 2(k - 1) + (1 - x)
    out = _recurrence(nt, _full(xt, 1.0), 1 - xt,
                      lambda k, q, p: _fms((1 - xt) + (2 * k - 2), q, p * (k - 1)) / k, POLY_STEPS)
    out = (xt == 0).where(1.0, (nt > POLY_STEPS).where(NAN, out))
    return (nt < 0).where(0.0, out)


@lowers("special_legendre_polynomial_p.default", "special_legendre_polynomial_p.x_scalar",
        "special_legendre_polynomial_p.n_scalar", pointwise=True)
def legendre_polynomial_p(x: Tensor | Scalar, n: Tensor | Scalar) -> Tensor:
    xt, nt = _as_tensors(x, n)
    nt = _degree(nt)
    # P_k = ((2k - 1) x P_{k-1} - (k - 1) P_{k-2}) / k
    out = _recurrence(nt, _full(xt, 1.0), xt, lambda k, q, p: _fms(xt * (2 * k - 1), q, p * (k - 1)) / k, POLY_STEPS)
    edge = ((xt > 0) | _even(nt)).where(_full(xt, 1.0), -1.0)
    out = (xt.abs() == 1).where(edge, (nt > POLY_STEPS).where(NAN, out))
    return (nt < 0).where(0.0, out)

# these register their lowerings (they import this table's helpers)
from . import lowering_bits, lowering_integer  # noqa: E402, F401
