// Spherical-Gaussian environment light, line for line with palm/render/sg.py.
// Lobes arrive decoded (sg_decode): unit axis xi, sharpness lambda = |P3|, amplitude mu = |P4:7|.
#ifndef MAX_LOBES
#define MAX_LOBES 64
#endif
uniform vec4 u_sg_lobe[MAX_LOBES];   // xyz: unit axis xi, w: sharpness lambda
uniform vec3 u_sg_mu[MAX_LOBES];     // RGB amplitude mu
uniform int u_n_lobes;

const float SG_PI = 3.14159265358979;
const float SG_TWO_PI = 6.28318530717959;
const float IRRADIANCE_SERIES_MAX_SHARPNESS = 3.0;

// sg_eval: E(w) = sum_k mu_k exp(lambda_k (w . xi_k - 1))
vec3 sg_eval(vec3 dir) {
    vec3 e = vec3(0.0);
    for (int k = 0; k < u_n_lobes; ++k)
        e += u_sg_mu[k] * exp(u_sg_lobe[k].w * (dot(dir, u_sg_lobe[k].xyz) - 1.0));
    return e;
}

// _lobe_integral: 2 pi (1 - e^{-2 lambda}) / lambda
float sg_lobe_integral(float lam) {
    lam = max(lam, 1e-8);
    return SG_TWO_PI * (1.0 - exp(-2.0 * lam)) / lam;
}

// _cosine_lobe_series: Funk-Hecke expansion, bands 0, 1, 2, 4 of the clamped cosine
float sg_cosine_lobe_series(float lam, float t) {
    float half_sq = 0.5 * lam * lam;
    float decay = exp(-lam);
    float legendre[4] = float[4](1.0, t, 0.5 * (3.0 * t * t - 1.0), (35.0 * t * t * t * t - 30.0 * t * t + 3.0) / 8.0);
    int band[4] = int[4](0, 1, 2, 4);
    float weight[4] = float[4](SG_PI, 2.0 * SG_PI, 1.25 * SG_PI, -0.375 * SG_PI);
    float dfact[4] = float[4](1.0, 3.0, 15.0, 945.0);  // (2l + 1)!!
    float out_ = 0.0;
    for (int b = 0; b < 4; ++b) {
        int l = band[b];
        float term = pow(lam, float(l)) / dfact[b];
        float total = term;
        for (int k = 1; k < 16; ++k) {
            term = term * half_sq / (float(k) * float(2 * l + 2 * k + 1));
            total += term;
        }
        out_ += weight[b] * decay * total * legendre[b];
    }
    return out_;
}

// _cosine_lobe_fitted: S. Hill's scale/bias fit times the exact lobe integral
float sg_cosine_lobe_fitted(float lam, float t) {
    float c0 = 0.36;
    float c1 = 1.0 / (4.0 * c0);
    float e1 = exp(-lam);
    float e2 = e1 * e1;
    float scale = 1.0 + 2.0 * e2 - 1.0 / lam;
    float bias = (e1 - e2) / lam - e2;
    float x = sqrt(1.0 - scale);
    float x0 = c0 * t;
    float x1 = c1 * x;
    float smooth_ = (x0 + x1) * (x0 + x1) / x;
    float y = abs(x0) <= x1 ? smooth_ : clamp(t, 0.0, 1.0);
    return (scale * y + bias) * sg_lobe_integral(lam);
}

// sg_cosine_lobe: int exp(lam (w.xi - 1)) max(w.n, 0) dw, cos_theta = xi . n
float sg_cosine_lobe(float lam, float cos_theta) {
    if (lam < IRRADIANCE_SERIES_MAX_SHARPNESS)
        return sg_cosine_lobe_series(clamp(lam, 1e-6, IRRADIANCE_SERIES_MAX_SHARPNESS), cos_theta);
    return sg_cosine_lobe_fitted(max(lam, IRRADIANCE_SERIES_MAX_SHARPNESS), cos_theta);
}

// sg_irradiance: cosine-convolved environment
vec3 sg_irradiance(vec3 n) {
    vec3 e = vec3(0.0);
    for (int k = 0; k < u_n_lobes; ++k)
        e += sg_cosine_lobe(u_sg_lobe[k].w, dot(n, u_sg_lobe[k].xyz)) * u_sg_mu[k];
    return e;
}
