// Skinned avatar mesh: linear blend skinning with 16 bone matrices in the vertex shader,
// spherical-Gaussian environment lighting (Lambert + GGX, palm/render/brdf.py shade_sg) in the
// fragment shader, sRGB output. PREINTEGRATED 1: the lighting integrals come from the
// environment's pre-integrated maps (sg_preintegrated.glsl); 0: exact, a loop over the lobes.
#ifndef PREINTEGRATED
#define PREINTEGRATED 1
#endif
#include "color.glsl"
#include "sg.glsl"
#include "brdf.glsl"
#include "sg_preintegrated.glsl"

#if defined(VERTEX_SHADER)
in vec3 in_position;    // canonical (rest) position, metres
in vec3 in_normal;
in vec3 in_albedo;      // linear RGB
in vec2 in_material;    // roughness, metallic
in vec4 in_w0;          // skin weights of joints 0-3
in vec4 in_w1;          // 4-7
in vec4 in_w2;          // 8-11
in vec4 in_w3;          // 12-15
uniform mat4 u_bones[16];   // rest -> posed world (palm.hand bone_transforms)
uniform mat4 u_view;        // world -> OpenCV camera
uniform mat4 u_proj;        // OpenCV camera -> clip (app/camera.py gl_projection)
out vec3 v_position;
out vec3 v_normal;
out vec3 v_albedo;
out vec2 v_material;
void main() {
    float w[16] = float[16](in_w0.x, in_w0.y, in_w0.z, in_w0.w, in_w1.x, in_w1.y, in_w1.z, in_w1.w,
                            in_w2.x, in_w2.y, in_w2.z, in_w2.w, in_w3.x, in_w3.y, in_w3.z, in_w3.w);
    mat4 skin = mat4(0.0);
    for (int j = 0; j < 16; ++j) skin += w[j] * u_bones[j];
    vec4 posed = skin * vec4(in_position, 1.0);
    v_position = posed.xyz;
    v_normal = mat3(skin) * in_normal;
    v_albedo = in_albedo;
    v_material = in_material;
    gl_Position = u_proj * (u_view * posed);
}
#endif

#if defined(FRAGMENT_SHADER)
in vec3 v_position;
in vec3 v_normal;
in vec3 v_albedo;
in vec2 v_material;
uniform vec3 u_eye;
uniform float u_exposure_scale;
out vec4 f_color;
void main() {
    vec3 n = normalize(v_normal);
    vec3 v = normalize(u_eye - v_position);
    if (dot(n, v) < 0.0) n = -n;   // two-sided: the wrist opening shows the inside
#if PREINTEGRATED
    vec3 c = shade_preintegrated(n, v, v_albedo, v_material.x, v_material.y) * u_exposure_scale;
#else
    vec3 c = shade_sg(n, v, v_albedo, v_material.x, v_material.y) * u_exposure_scale;
#endif
    f_color = vec4(clamp(linear_to_srgb(c), 0.0, 1.0), 1.0);
}
#endif
