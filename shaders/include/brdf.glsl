// The simplified Disney BRDF under an SG environment, line for line with palm/render/brdf.py
// (shade_sg and the helpers it uses). Needs sg.glsl.
const float FRESNEL_A = -5.55473;
const float FRESNEL_B = -6.98316;
const float F0_DIELECTRIC = 0.04;
const float COS_EPS = 1e-6;

// smith_g1: (n.x) / ((n.x)(1 - k) + k), k = (alpha + 1)^2 / 8 (0 if denominator <= 1e-6)
float smith_g1(float cos_nx, float alpha) {
    float k = (alpha + 1.0) * (alpha + 1.0) / 8.0;
    float den = cos_nx * (1.0 - k) + k;
    return den > 1e-6 ? cos_nx / max(den, 1e-6) : 0.0;
}

// fresnel_schlick: F0 + (1 - F0) 2^((A c + B) c), c = |v.h|
vec3 fresnel_schlick(float cos_vh, vec3 f0) {
    float c = abs(cos_vh);
    return f0 + (1.0 - f0) * exp2((FRESNEL_A * c + FRESNEL_B) * c);
}

// base_reflectance: F0 = 0.04 (1 - m) + a m
vec3 base_reflectance(vec3 albedo, float metallic) {
    return F0_DIELECTRIC * (1.0 - metallic) + albedo * metallic;
}

// shade_sg: Lambert with SG irradiance + the GGX NDF as an SG around n (sharpness s = 2/alpha^2,
// amplitude normalising int D (n.h) dh = 1), warped into the light domain (Wang et al. 2009); its
// product with each light lobe is an SG integrated against the clamped cosine (sg_cosine_lobe);
// F(c = n.v) G1(v) / ((4 n.v + 1e-6) ((n.v)(1 - k) + k)) taken at the lobe centre (h = n).
vec3 shade_sg(vec3 normal, vec3 view, vec3 albedo, float roughness, float metallic) {
    float alpha = max(roughness, 1e-3);
    float m = metallic;
    vec3 diffuse = (1.0 - m) * albedo / SG_PI * sg_irradiance(normal);

    float cos_nv = dot(normal, view);
    float ndf_sharpness = 2.0 / (alpha * alpha);
    float s = ndf_sharpness;
    float ndf_amplitude = 1.0 / (2.0 * SG_PI * (1.0 / s - (1.0 - exp(-s)) / (s * s)));
    vec3 reflected = 2.0 * cos_nv * normal - view;
    float warped_sharpness = ndf_sharpness / (4.0 * max(cos_nv, 1e-4));

    vec3 light = vec3(0.0);
    for (int k = 0; k < u_n_lobes; ++k) {
        vec3 combined = warped_sharpness * reflected + u_sg_lobe[k].w * u_sg_lobe[k].xyz;
        float d = max(length(combined), 1e-6);
        float cos_axis_n = dot(combined, normal) / d;
        float overlap = exp(d - warped_sharpness - u_sg_lobe[k].w) * sg_cosine_lobe(d, cos_axis_n);
        light += overlap * u_sg_mu[k];
    }
    light *= ndf_amplitude;

    float kk = (alpha + 1.0) * (alpha + 1.0) / 8.0;
    float g1_v = smith_g1(cos_nv, alpha);
    vec3 f = fresnel_schlick(cos_nv, base_reflectance(albedo, m));
    vec3 specular = light * f * g1_v / ((4.0 * cos_nv + 1e-6) * (cos_nv * (1.0 - kk) + kk));
    if (!(cos_nv > COS_EPS)) specular = vec3(0.0);
    return diffuse + specular;
}
