// Pre-integrated SG environment (app/prefilter.py): diffuse from an irradiance equirect map,
// specular from mean-radiance maps of log2-spaced SG sharpness. Needs sg.glsl (sg_cosine_lobe)
// and brdf.glsl (smith_g1, fresnel_schlick, base_reflectance).
uniform sampler2D u_irradiance;       // equirect sg_irradiance(n), texture row 0 = sky
uniform sampler2DArray u_specular;    // layer l: mean radiance under exp(d_l (w.a - 1)), d_l = 2^(d0 + l)
uniform mat3 u_env_from_world;        // undoes the environment's rotation (world -> map directions)
uniform float u_spec_log2_d0;
uniform int u_spec_layers;
const float COSINE_SG_SHARPNESS = 2.133;

// palm/render/envmap.py dir_to_uv, flipped to texture rows (row 0 = sky)
vec2 equirect_uv(vec3 d) {
    return vec2(atan(d.x, d.z) / SG_TWO_PI + 0.5, 0.5 - asin(clamp(d.y, -1.0, 1.0)) / SG_PI);
}

vec3 preintegrated_irradiance(vec3 n) {
    return texture(u_irradiance, equirect_uv(u_env_from_world * n)).rgb;
}

vec3 preintegrated_radiance(vec3 axis, float sharpness) {
    float top = float(u_spec_layers - 1);
    float level = clamp(log2(sharpness) - u_spec_log2_d0, 0.0, top);
    float l0 = floor(level);
    vec2 uv = equirect_uv(u_env_from_world * axis);
    vec3 a = texture(u_specular, vec3(uv, l0)).rgb;
    vec3 b = texture(u_specular, vec3(uv, min(l0 + 1.0, top))).rgb;
    return mix(a, b, level - l0);
}

// shade_sg (brdf.glsl) with the light integrals read from the maps: the warped GGX lobe times the
// cosine (as an SG around n) is one SG (axis a, sharpness d); its exact constant-environment
// integral sg_cosine_lobe(s_w, n.v) times the map's mean radiance under that SG.
vec3 shade_preintegrated(vec3 normal, vec3 view, vec3 albedo, float roughness, float metallic) {
    float alpha = max(roughness, 1e-3);
    float m = metallic;
    vec3 diffuse = (1.0 - m) * albedo / SG_PI * preintegrated_irradiance(normal);

    float cos_nv = dot(normal, view);
    float s = 2.0 / (alpha * alpha);
    float ndf_amplitude = 1.0 / (2.0 * SG_PI * (1.0 / s - (1.0 - exp(-s)) / (s * s)));
    vec3 reflected = 2.0 * cos_nv * normal - view;
    float warped_sharpness = s / (4.0 * max(cos_nv, 1e-4));
    vec3 combined = warped_sharpness * reflected + COSINE_SG_SHARPNESS * normal;
    float d = max(length(combined), 1e-6);
    vec3 light = ndf_amplitude * sg_cosine_lobe(warped_sharpness, cos_nv) * preintegrated_radiance(combined / d, d);

    float kk = (alpha + 1.0) * (alpha + 1.0) / 8.0;
    float g1_v = smith_g1(cos_nv, alpha);
    vec3 f = fresnel_schlick(cos_nv, base_reflectance(albedo, m));
    vec3 specular = light * f * g1_v / ((4.0 * cos_nv + 1e-6) * (cos_nv * (1.0 - kk) + kk));
    if (!(cos_nv > COS_EPS)) specular = vec3(0.0);
    return diffuse + specular;
}
